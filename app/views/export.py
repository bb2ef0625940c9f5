"""Export: the current Circuit view as files, and the view state as JSON that reopens it."""

import state
import streamlit as st

from circuitviz.plotting.export import MIME, SUFFIX, export_view
from circuitviz.plotting.rundata import resolve_view
from circuitviz.plotting.view import ViewState

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
if not frames.tokens:
    st.info("This run has no circuit snapshot yet, so there is nothing to export.")
    st.stop()
layout = state.layout_of(frames.layout_key)
state.check_view(frames, layout)  # a step or box the run lacks: warned about and replaced
view = state.view()
resolved = resolve_view(frames, view)
st.markdown(
    f"**The current view:** {state.as_text(resolved.title, 300)}"
    + (f", box {view.node} selected" if view.node else "")
)
st.caption("Change it on the Circuit page; everything below exports exactly that view.")

FILES = [
    ("svg", "Figure as SVG", "vector, for papers and slides"),
    ("pdf", "Figure as PDF", "vector, for LaTeX"),
    ("png", "Figure as PNG", "150 dpi raster"),
    ("html", "Interactive HTML of this step", "self-contained plotly page: hover and zoom offline"),
    (
        "player",
        "Interactive HTML of the whole run",
        "the dashboard's own renderer with every snapshot: step slider, top-N, compare and node "
        "details, offline",
    ),
    ("json", "Circuit as JSON", "EAP-IG's format: every edge's score and whether it is shown"),
    ("csv", "Circuit as CSV", "one row per shown edge"),
    ("view", "View state as JSON", "reopens this exact view (here or with `circuitviz export`)"),
]
base = f"{frames.run_id}-{resolved.token_b}"
columns = st.columns(3)
for i, (fmt, label, help_text) in enumerate(FILES):
    columns[i % 3].download_button(
        label,
        data=lambda fmt=fmt: export_view(frames, layout, view, fmt),
        file_name=f"{base}.{SUFFIX[fmt]}",
        mime=MIME[fmt],
        help=help_text,
        width="stretch",
        key=f"download-{fmt}",
    )

st.markdown("#### Animated GIF of the step slider")
st.caption(f"One frame per snapshot ({len(frames.tokens)}), at the view's cut-off.")
if st.button("Make the GIF"):
    with st.spinner("Drawing frames..."):
        st.session_state["cv_gif"] = (view, export_view(frames, layout, view, "gif"))
made = st.session_state.get("cv_gif")
if made is not None and made[0] == view:
    st.image(made[1])
    st.download_button(
        "Download the GIF", made[1], file_name=f"{frames.run_id}.gif", mime=MIME["gif"]
    )

st.markdown("#### The same from a terminal")
top = "all" if view.top_n is None else view.top_n
st.code(
    f"circuitviz export --run {frames.run_id} --step {resolved.token_b} --top-n {top} "
    f"--threshold {view.threshold:g} --out {base}.svg\n"
    f"circuitviz export --view {base}.view.json --out {base}.pdf",
    language="bash",
)

st.markdown("#### Open a saved view")
uploaded = st.file_uploader("A .view.json file", type=["json"])
if uploaded is not None:
    try:
        opened = ViewState.from_json(uploaded.getvalue().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        st.error(f"That file is not a circuitviz view: {exc}")
    else:
        if st.button("Open this view"):
            st.session_state[state.VIEW_KEY] = opened
            st.switch_page("views/circuit.py")
