"""Heads: layer x head maps of attribution (before vs now) and of parameter change per head."""

import state
import streamlit as st
import widgets

from circuitviz.plotting.heads import head_attribution, head_heatmap_figure, param_change_figure
from circuitviz.plotting.view import token_label
from circuitviz.runs import RunStoreError

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
style = state.figure_style()
n_layers, n_heads = frames.graph_shape[:2]
shown: dict = {}  # the page's figures by name, for the files at the end

st.markdown("#### Attribution through each head")
if frames.tokens:
    layout = state.layout_of(frames.layout_key)
    state.check_view(frames, layout)
    token = widgets.step_slider(frames)
    signed = st.checkbox("Signed (sum of scores) instead of Σ|score|", value=False)
    row = frames.tokens.index(token)
    panels = {
        token_label(frames.tokens[0], frames.snapshots): head_attribution(
            layout, frames.scores[0], signed=signed
        ),
        token_label(token, frames.snapshots): head_attribution(
            layout, frames.scores[row], signed=signed
        ),
    }
    fig = head_heatmap_figure(
        panels, colorbar_title="Σ score" if signed else "Σ|score|", diverging=signed, style=style
    )
    shown[f"attribution per head at {token_label(token, frames.snapshots)}"] = fig
    st.plotly_chart(fig, theme=None, width="stretch")
    st.caption("Each cell sums the scores of every edge into or out of that head at that step.")
else:
    st.info("No circuit snapshot yet.")

st.markdown("#### Parameter change per head, ‖W_t − W_0‖ / ‖W_0‖")
runs = [r for r in state.all_runs() if r.status != "corrupt" and r.id != frames.run_id]
same = [r for r in runs if r.task == frames.task and r.model == frames.model_spec]
full = [r for r in same if r.method == "full"]
options = ["(none)"] + [r.id for r in runs]
default = full[0].id if full and frames.method != "full" else "(none)"
names = {r.id: widgets.describe_run(r) for r in runs}
other_id = st.selectbox(
    "Compare with run (e.g. full fine-tuning)",
    options,
    index=options.index(default),
    format_func=lambda i: names.get(i, i),
)
changes = {}
if len(frames.head_changes):
    last = frames.head_changes["step"].max()
    changes[f"{frames.method or 'this run'} (step {last})"] = frames.head_changes[
        frames.head_changes["step"] == last
    ]
if other_id != "(none)":
    try:
        other = state.load(other_id)
        if len(other.head_changes):
            last = other.head_changes["step"].max()
            changes[f"{other.method or other_id} (step {last})"] = other.head_changes[
                other.head_changes["step"] == last
            ]
        else:
            st.info(f"Run {other_id} recorded no parameter changes.")
    except RunStoreError as exc:
        st.warning(f"Run {other_id} could not be read: {exc}")
if changes:
    shown["parameter change per head"] = param_change_figure(
        changes, n_layers, n_heads, style=style
    )
    st.plotly_chart(shown["parameter change per head"], theme=None, width="stretch")
else:
    st.info("This run recorded no per-head parameter changes (yet).")

if shown:
    st.markdown("#### Files")
    widgets.figure_files(shown, frames.run_id, key="heads_export_figure")
