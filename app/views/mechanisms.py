"""Mechanisms: why the circuit changed, from ``circuitviz analyse``'s results in the run store.

Each head's direct logit attribution at an analysed step next to step 0's, the largest nodes'
against step, the faithfulness of the circuit the run held at each step and of the one it started
from, and the overlap with another run's circuits step by step.
"""

import state
import streamlit as st

from circuitviz.plotting.heads import head_heatmap_figure
from circuitviz.plotting.mechanisms import (
    alignment_frame,
    alignment_lines,
    analysed_steps,
    dla_lines,
    dla_matrix,
    faithfulness_frame,
    faithfulness_lines,
)

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
style = state.figure_style()
analyses = state.analyses(frames.run_id)
if analyses.empty:
    st.info(
        "This run has not been analysed yet. Analyse it from the Run page, or with "
        f"`circuitviz analyse {frames.run_id}` (add `--against OTHER` to compare it with another "
        "run); the results are written into the run and show here."
    )
    st.stop()
n_layers, n_heads = frames.graph_shape[:2]

dla_steps = analysed_steps(analyses, "dla")
if dla_steps:
    st.markdown("#### Direct logit attribution per head")
    step = (
        dla_steps[-1]
        if len(dla_steps) == 1
        else st.select_slider(
            "Analysed step (a checkpoint)", options=dla_steps, value=dla_steps[-1], key="mech_step"
        )
    )
    panels = {f"step {dla_steps[0]}": dla_matrix(analyses, dla_steps[0], n_layers, n_heads)}
    panels[f"step {step}"] = dla_matrix(analyses, step, n_layers, n_heads)
    st.plotly_chart(
        head_heatmap_figure(panels, colorbar_title="DLA", diverging=True, style=style),
        theme=None,
        width="stretch",
    )
    st.caption(
        "Each head's output at the target position, through the final norm at its frozen scale, "
        "onto W_U[answer] − W_U[wrong]: positive pushes the answer. A head whose colour flips "
        "between the panels changed sides during tuning."
    )
    st.plotly_chart(dla_lines(analyses, style=style), theme=None, width="stretch")

faith = faithfulness_frame(analyses)
if len(faith):
    st.markdown("#### Faithfulness over time")
    st.plotly_chart(faithfulness_lines(analyses, style=style), theme=None, width="stretch")
    st.caption(
        "Solid: the circuit the run held at that step; dotted: the circuit it started from, both "
        "measured with that step's weights. A falling solid line: the circuit became less "
        "faithful. A falling dotted line under a steady solid one: the circuit moved."
    )

aligned = alignment_frame(analyses)
if len(aligned):
    st.markdown("#### Compared with another run")
    others = sorted(set(aligned["other"]))
    other = others[0] if len(others) == 1 else st.selectbox("Other run", others, key="mech_other")
    st.plotly_chart(alignment_lines(analyses, other, style=style), theme=None, width="stretch")
