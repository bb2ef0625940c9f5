"""Dynamics: metrics against step for several runs, edge trends, circuit size, a sweep's curve."""

import contextlib

import pandas as pd
import state
import streamlit as st
import widgets

from circuitviz.plotting.dynamics import (
    RunSeries,
    circuit_size_heatmap,
    dynamics_figure,
    edge_trend_figure,
    intrinsic_dimension_figure,
)
from circuitviz.plotting.view import token_label
from circuitviz.runs import Run, RunStoreError
from circuitviz.runs.compare import compare_frame, compare_rows

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
style = state.figure_style()
shown: dict = {}  # every figure on the page by name, for the files at the end


def show(fig, name: str) -> None:
    shown[name] = fig
    st.plotly_chart(fig, theme=None, width="stretch")


runs = [r for r in state.all_runs() if r.status != "corrupt" and r.kind in (None, "tune", "sweep")]
ids = [r.id for r in runs]
labels = {r.id: widgets.describe_run(r) for r in runs}

cursor = None
if frames.tokens:
    state.check_view(frames, state.layout_of(frames.layout_key))
    token = widgets.step_slider(
        frames, label="Step (the cursor on every curve; the Circuit page shows it)"
    )
    cursor = float(frames.snapshots["step"].iloc[frames.tokens.index(token)])

st.markdown("#### Training curves")
overlay = state.bound(
    "overlay",
    st.multiselect,
    "Overlay other runs (e.g. circuit-tuning vs full fine-tuning, other N or K)",
    options=[i for i in ids if i != frames.run_id],
    format_func=lambda i: labels.get(i, i),
    to_widget=lambda ov: [i for i in ov if i in ids and i != frames.run_id],
    from_widget=tuple,
)
# The runs side by side, as `circuitviz compare` prints them: final figures of each run.
compared = []
for run_id in (frames.run_id, *overlay):
    with contextlib.suppress(RunStoreError):  # unreadable now: the overlay below says so
        compared.append(Run(state.run_dir_of(run_id)))
if compared:
    st.dataframe(compare_frame(compare_rows(compared)), hide_index=True, width="stretch")
    st.caption(
        "Final figures of each run (`circuitviz compare RUN ... --json / --csv / --latex` writes "
        "them for papers); s/step is one optimizer step, discovery included."
    )

series = [
    RunSeries(
        label=labels.get(frames.run_id, frames.label()), steps=frames.steps, evals=frames.evals
    )
]
for run_id in overlay:
    try:
        other = state.load(run_id)
    except RunStoreError as exc:
        st.warning(f"Run {run_id} could not be read and is left out: {exc}")
        continue
    series.append(RunSeries(label=labels.get(run_id, run_id), steps=other.steps, evals=other.evals))
if all(s.steps.empty and s.evals.empty for s in series):
    st.info("No steps logged yet.")
else:
    show(dynamics_figure(series, cursor=cursor, style=style), "metrics against step")

if len(frames.tokens) >= 2:
    st.markdown("#### Strengthened, weakened and sign-flipped edges")
    st.caption(
        "Judged on |score| (how strongly an edge matters, whichever way), coloured as the "
        "Circuit page's compare legend; a score that changed sign is listed as flipped."
    )
    c1, c2, c3 = st.columns(3)
    min_r = c1.slider("Minimum |r| of the trend", 0.0, 0.95, 0.5, 0.05)
    n_show = c2.slider("Edges per panel", 1, 30, 10)
    heads_only = c3.checkbox("Only head → head edges", value=False)
    layout = state.layout_of(frames.layout_key)
    candidates = None
    if heads_only:
        kinds = pd.Series(layout.node_kind)
        is_head = (kinds == "head").to_numpy()
        candidates = is_head[layout.edge_src_node] & is_head[layout.edge_dst_node]
    steps = frames.snapshots["step"].to_numpy()
    show(
        edge_trend_figure(
            steps,
            frames.scores,
            layout.edge_names,
            min_r=min_r,
            n_show=n_show,
            candidates=candidates,
            style=style,
        ),
        "edge trends",
    )
    st.markdown("#### Circuit size: edges above each threshold, at each snapshot")
    step_labels = [token_label(t, frames.snapshots) for t in frames.tokens]
    show(circuit_size_heatmap(step_labels, frames.scores, style=style), "circuit size")
else:
    st.info("Edge trends and the circuit-size map need at least two snapshots.")

sweeps = sorted({r.sweep_id for r in runs if r.sweep_id})
if sweeps:
    st.markdown("#### Intrinsic dimension: final values against top-N (a sweep)")
    default = frames.sweep_id if frames.sweep_id in sweeps else sweeps[0]
    sweep_id = st.selectbox("Sweep", sweeps, index=sweeps.index(default))
    rows = []
    for run in (r for r in runs if r.sweep_id == sweep_id):
        try:
            member = state.load(run.id)
        except RunStoreError:
            continue
        evals, steps = member.evals, member.steps
        rows.append(
            {
                "top_n": member.config.get("top_n"),
                "task_metric": evals["task_metric"].iloc[-1] if len(evals) else None,
                "lm_loss": evals["lm_loss"].iloc[-1] if len(evals) else None,
                "tuned_ratio": steps["tuned_ratio"].mean() if len(steps) else None,
                "n_nodes": steps["n_nodes"].mean() if len(steps) else None,
            }
        )
    sweep = pd.DataFrame(rows).dropna(subset=["top_n"])
    if len(sweep):
        show(intrinsic_dimension_figure(sweep, style=style), f"intrinsic dimension of {sweep_id}")
    else:
        st.info("This sweep's runs record no top-N yet.")

if shown:
    st.markdown("#### Files")
    widgets.figure_files(shown, frames.run_id, key="dyn_export_figure")
