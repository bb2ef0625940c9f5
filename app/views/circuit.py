"""Circuit: the edge graph of a run at a step, drawn in the browser; scrub, cut, select a box,
compare two steps, all without waiting for the server."""

import graphview
import panels
import state
import streamlit as st

from circuitviz.plotting.rundata import node_color_modes
from circuitviz.plotting.style import ROLE_LABELS

frames = state.current_run()
if frames is None:
    st.stop()
panels.follow_live(frames)
if len(frames.tasks) > 1:
    state.bound(
        "task",
        st.radio,
        "Circuits of task",
        options=list(frames.tasks),
        horizontal=True,
        to_widget=lambda t: t if t in frames.tasks else frames.snapshot_task,
        then=lambda: state.set_view(step=None, compare=None),
        label_visibility="collapsed" if state.view().presentation else "visible",
    )
if not frames.tokens:
    st.subheader(state.run_title(frames))
    st.info("This run has not stored a circuit yet; the first one appears here once it lands.")
    st.stop()
layout = state.layout_of(frames.layout_key)
state.check_view(frames, layout)
if frames.shown_status != "finished":
    st.caption(f"Run status: {state.run_title(frames)}")
mode = state.view().node_color
if mode not in node_color_modes(frames):
    what = "direct logit attribution" if mode == "dla" else f"{ROLE_LABELS[mode]} scores"
    st.info(
        f"This run has no {what} stored, so its boxes show their kind. `circuitviz analyse "
        f"{frames.run_id}` (or **Analyse a run** on the Run page) measures them"
        + (" (copying needs a pair task)" if mode == "copying" else "")
        + "."
    )
run_dir = state.run_dir_of(frames.run_id)
graphview.show(frames, layout, str(run_dir), state.run_stamp(run_dir))
if not state.view().presentation:
    st.caption(
        "Drag the step slider or press ▶; type a top-N or drag its slider; hover an edge for its "
        "score and rank; click a box for its edges and history; scroll to zoom, drag to pan, "
        "double-click to fit. Width ∝ |score|; a paler box carries less attribution; boxes outlined "
        "dark are trained by the run's own circuit at this step. *boxes: DLA* fills each head, MLP "
        "and the input by its direct logit attribution (blue: it pushes the answer over the wrong "
        "token), *boxes: induction* etc. each head by that role's score, both at the latest "
        "analysed step at or before the step shown, measured on the run's own task."
    )
