"""Widgets more than one page uses: the sidebar's run picker and the step slider."""

from __future__ import annotations

import state
import streamlit as st

from circuitviz.plotting.rundata import RunFrames
from circuitviz.plotting.view import token_label


def sidebar() -> None:
    """Run picker, presentation mode, and any problem with the URL the page was opened with."""
    runs = state.all_runs()
    view = state.view()
    ids = [run.id for run in runs]
    if view.run is None and ids:
        state.set_view(run=state.default_run(runs))
    with st.sidebar:
        st.markdown("### circuitviz")
        if ids:
            summaries = {run.id: run for run in runs}
            options = ids if view.run in ids or view.run is None else [view.run, *ids]

            def describe(run_id: str) -> str:
                run = summaries.get(run_id)
                if run is None:
                    return f"{run_id} (not found)"
                return describe_run(run)

            state.bound(
                "run",
                st.selectbox,
                "Run",
                options=options,
                format_func=describe,
                then=on_run_change,
                help="Runs under $CIRCUITVIZ_RUNS (or ./runs) and the bundled demo runs.",
            )
            chosen = summaries.get(state.view().run)
            if chosen is not None:
                st.caption(
                    f"`{chosen.id}`  \nmodel **{chosen.model}**, {chosen.n_steps} steps, "
                    f"{chosen.kind or 'run'}"
                )
        else:
            st.caption("No runs found yet.")
        state.bound(
            "presentation",
            st.toggle,
            "Presentation mode",
            help="Larger text and thicker lines, for a projector.",
        )
        for problem in st.session_state.get(state.PROBLEMS_KEY) or []:
            st.warning(f"The link had a problem and was partly ignored: {problem}")


def describe_run(run) -> str:
    """One line naming a run in pickers: task / method · date, and its status when notable."""
    what = " / ".join(p for p in (run.task, run.method) if p) or run.kind or "run"
    when = (run.created or "")[5:19].replace("T", " ")
    flag = {"running": " · running", "failed": " · failed", "corrupt": " · damaged"}
    return f"{what} · {when or run.id[-4:]}{flag.get(run.status, '')}"


def on_run_change() -> None:
    """Steps, comparisons and selections belong to one run; a new run starts from its defaults."""
    state.set_view(step=None, compare=None, node=None, task=None)


def step_slider(frames: RunFrames, *, field: str = "step", label: str = "Step") -> str:
    """A slider over the run's snapshots (before, each during step, after); returns the token."""
    tokens = frames.tokens
    current = getattr(state.view(), field)
    if current not in tokens:
        state.set_view(**{field: tokens[-1]})
    if len(tokens) == 1:
        st.caption(
            f"{label}: {token_label(tokens[0], frames.snapshots)} (the only snapshot so far)"
        )
        return tokens[0]
    return state.bound(
        field,
        st.select_slider,
        label,
        options=tokens,
        format_func=lambda token: token_label(token, frames.snapshots),
    )
