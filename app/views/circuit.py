"""Circuit: the edge graph of a run at a step; scrub, cut, select a box, compare two steps."""

import numpy as np
import panels
import state
import streamlit as st
import widgets

from circuitviz.plotting.circuit import circuit_figure, circuit_view
from circuitviz.plotting.rundata import resolve_view

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
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
    )
if not frames.tokens:
    st.info("This run has not stored a circuit yet; the first one appears here once it lands.")
    st.stop()
layout = state.layout_for(frames.graph_shape)
tokens = frames.tokens

left, right = st.columns([6, 1], vertical_alignment="bottom")
with left:
    widgets.step_slider(frames)
with right:
    panels.play_button(tokens)

strength = np.abs(np.nan_to_num(frames.scores))
top_score = float(strength.max()) or 1.0
max_n = min(layout.n_edges, 5000)
c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
with c1:
    state.bound(
        "top_n",
        st.slider,
        "Top-N edges (0 = all above the threshold)",
        min_value=0,
        max_value=max_n,
        to_widget=lambda n: max_n if n is None and layout.n_edges <= max_n else min(n or 0, max_n),
        from_widget=lambda n: n or None,
    )
with c2:
    state.bound(
        "threshold",
        st.slider,
        "Threshold on |score|",
        min_value=0.0,
        max_value=top_score,
        step=top_score / 200,
        format="%.3g",
        to_widget=lambda t: min(t, top_score),
        from_widget=float,
    )
with c3:
    state.bound(
        "color_by", st.radio, "Colour edges by", options=["sign", "target"], horizontal=True
    )
with c4:
    state.bound("only_circuit", st.checkbox, "Only the run's own circuit")
    st.session_state["w_comparing"] = state.view().compare is not None
    st.toggle(
        "Compare two steps",
        key="w_comparing",
        on_change=lambda: state.set_view(
            compare=tokens[0] if st.session_state["w_comparing"] else None
        ),
    )

if state.view().compare is not None:
    a, b = st.columns([6, 2])
    with a:
        widgets.step_slider(
            frames, field="compare", label="Compare with step (A); the step above is B"
        )
    with b:
        state.bound("compare_mode", st.radio, "Show", options=["overlay", "side"], horizontal=True)

view = state.view()
resolved = resolve_view(frames, view)
style = state.figure_style()
common = {"threshold": view.threshold, "top_n": view.top_n, "highlight": view.node}
common |= {"only_selected": view.only_circuit, "color_by": view.color_by, "style": style}


def chart(scores, selected, title, key, **extra):
    fig = circuit_figure(layout, scores, selected, title=title, **common, **extra)
    st.plotly_chart(
        fig,
        key=key,
        theme=None,
        width="stretch",
        on_select=lambda: _pick(key),
        selection_mode="points",
        config={"displaylogo": False, "scrollZoom": True},
    )


def _pick(key):
    points = st.session_state[key].selection.points
    names = [p.get("customdata") for p in points if isinstance(p.get("customdata"), str)]
    if names:
        state.set_view(node=names[0])


if resolved.compare is None:
    chart(resolved.scores, resolved.selected, resolved.title, "circuit_chart")
elif view.compare_mode == "overlay":
    noise = frames.noise_std
    diff = circuit_view(
        layout,
        resolved.scores,
        compare=resolved.compare,
        noise_floor=noise,
        top_n=view.top_n,
        threshold=view.threshold,
    ).diff
    panels.compare_summary(diff, noise is not None)
    chart(
        resolved.scores,
        resolved.selected,
        resolved.title,
        "circuit_chart",
        compare=resolved.compare,
        noise_floor=noise,
    )
else:
    col_a, col_b = st.columns(2)
    with col_a:
        chart(
            resolved.compare, frames.selected[resolved.row_a], f"A: {resolved.token_a}", "chart_a"
        )
    with col_b:
        chart(resolved.scores, resolved.selected, f"B: {resolved.token_b}", "chart_b")

st.caption(
    "Width ∝ |score|. Hover an edge for its names, score and rank; click a box to select it. "
    "Boxes with a dark outline are trained by the run's own circuit at this step."
)
names = ["(none)", *layout.node_names]
state.bound(
    "node",
    st.selectbox,
    "Selected box",
    options=names,
    to_widget=lambda n: n if n in names else "(none)",
    from_widget=lambda n: None if n == "(none)" else n,
)
if state.view().node is not None:
    panels.node_details(frames, layout, resolved.row_b, state.view().node)
