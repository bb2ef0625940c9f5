"""The circuitviz dashboard: ``circuitviz app`` (or ``./run.sh app``) serves this file.

Each page in ``views/`` is a thin layer over the run store (``circuitviz.runs``) and the pure
figure functions (``circuitviz.plotting``); no model ever runs inside a page. The view (run, step,
cut-off, selection) lives in the session and is mirrored into the URL.
"""

import state
import streamlit as st
import widgets

st.set_page_config(page_title="circuitviz", page_icon=":material/hub:", layout="wide")
state.init_view()
# Less empty space above the page, so the graph (which fills the window below its controls) is
# large; presentation mode leaves even less, for a 1280 x 720 projector.
TOP = "0.6rem" if state.view().presentation else "2.2rem"
st.html(f"<style>[data-testid='stMainBlockContainer'] {{ padding-top: {TOP}; }}</style>")

PAGES = [
    st.Page(
        "views/circuit.py",
        title="Circuit",
        icon=":material/hub:",
        default=True,  # served at /
    ),
    st.Page(
        "views/dynamics.py", title="Dynamics", icon=":material/show_chart:", url_path="dynamics"
    ),
    st.Page("views/heads.py", title="Heads", icon=":material/grid_on:", url_path="heads"),
    st.Page(
        "views/mechanisms.py",
        title="Mechanisms",
        icon=":material/biotech:",
        url_path="mechanisms",
    ),
    st.Page("views/run.py", title="Run", icon=":material/play_circle:", url_path="run"),
    st.Page("views/export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page("views/tour.py", title="Tour", icon=":material/school:", url_path="tour"),
]

page = st.navigation(PAGES)
widgets.sidebar()
page.run()
state.write_url()
