"""Widgets more than one page uses: the sidebar's run picker, the step slider, a figure's files."""

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
            st.warning(
                f"The link had a problem and was partly ignored: {state.as_text(problem, 200)}"
            )


def describe_run(run) -> str:
    """One line naming a run in pickers: its id, method, N (top-N) and K (re-discovery interval),
    and its status when notable, so runs of one task and method are told apart."""
    config = getattr(run, "config", None) or {}
    parts = [run.id, run.method or run.kind or "run"]
    if run.method in ("lora", "circuit-lora") and config.get("lora_rank") is not None:
        parts.append(f"r={config['lora_rank']}")
    if run.method not in ("full", "lora"):
        if config.get("top_n") is not None:
            parts.append(f"N={config['top_n']}")
        if config.get("every") is not None:
            parts.append(f"K={config['every']}")
    status = getattr(run, "shown_status", run.status)
    flag = {"running": "running", "failed": "failed", "corrupt": "damaged", "stopped": "stopped"}
    if status in flag:
        parts.append(flag[status])
    return " · ".join(str(p) for p in parts)


def on_run_change() -> None:
    """Steps, comparisons and selections belong to one run; a new run starts from its defaults."""
    state.set_view(step=None, compare=None, node=None, task=None)


def step_slider(frames: RunFrames, *, field: str = "step", label: str = "Step") -> str:
    """A slider over the run's snapshots (before, each during step, after); returns the token.
    (A step the run lacks was reported and replaced by ``state.check_view``; None is the newest.)"""
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


def figure_files(figures: dict, run_id: str, key: str) -> None:
    """One of ``figures`` (name -> plotly figure) as an SVG, PDF or PNG file, redrawn with
    matplotlib (``plotting.figure_static``: no browser or kaleido) when a button is clicked, not on
    every rerun of the page."""
    from circuitviz.plotting.figure_static import static_figure
    from circuitviz.plotting.static import static_bytes
    from circuitviz.runs.fields import slug

    if not figures:
        return
    chosen = st.selectbox("One figure as a file (SVG, PDF, PNG)", list(figures), key=key)
    name = slug(chosen)
    style = state.figure_style()
    for column, fmt in zip(st.columns(3), ("svg", "pdf", "png")):
        column.download_button(
            f"{fmt.upper()} (drawn without a browser)",
            data=lambda fig=figures[chosen], fmt=fmt: static_bytes(
                static_figure(fig, style=style), fmt
            ),
            file_name=f"{run_id}.{name}.{fmt}",
            mime={"svg": "image/svg+xml", "pdf": "application/pdf", "png": "image/png"}[fmt],
            key=f"{key}_{fmt}",
        )
