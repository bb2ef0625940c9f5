"""The Circuit page's graph: the browser renderer (``circuitviz.plotting.web``) as a component.

The run's snapshots go to the browser once; the step slider, Play, top-N, threshold, compare, focus
and node details then redraw there without a server round trip. The two sides keep one view:

1. The server pushes its view with the payload, numbered (``view_rev``), whenever it differs from
   what the browser is known to show (a link, the tour, the sidebar, a live run's newest step).
2. The browser reports its view once the user pauses (one small message, never per slider move):
   the report reruns only this fragment, which adopts it and writes it into the URL, so a reload,
   a shared link and the other pages show the same step.

Unchanged payloads are the same bytes object, which Streamlit's message cache does not resend.
"""

from __future__ import annotations

import json

import state
import streamlit as st

from circuitviz.plotting.layout import Layout
from circuitviz.plotting.rundata import RunFrames
from circuitviz.plotting.view import ViewState
from circuitviz.plotting.web import payload_parts, renderer_css, renderer_js, run_payload, view_dict

KEY = "circuit"
BROWSER_KEY = "cv_browser_view"  # the renderer-owned view the browser is known to show
REV_KEY = "cv_view_rev"
SEQ_KEY = "cv_report_seq"
BYTES_KEY = "cv_payload"

GRAPH = st.components.v2.component(
    "circuitviz_graph", js=renderer_js(), css=renderer_css(), isolate_styles=False
)


@st.cache_resource(max_entries=6, show_spinner=False)
def _parts(run_dir: str, stamp: tuple, task: str | None, _frames: RunFrames, _layout: Layout):
    """The view-independent part of a run's payload (cached with the run's database stamp)."""
    return payload_parts(_frames, _layout)


def adopt_report() -> None:
    """Take the view the browser reported (if it is new and about the current run)."""
    value = st.session_state.get(KEY)
    report = value.get("view") if isinstance(value, dict) else None
    if not isinstance(report, dict) or report.get("seq") == st.session_state.get(SEQ_KEY):
        return
    st.session_state[SEQ_KEY] = report.get("seq")
    if report.get("run") != state.view().run:
        return
    changes = {key: report[key] for key in view_dict(ViewState()) if key in report and key != "run"}
    try:
        new = state.set_view(**changes)
    except (ValueError, TypeError):
        return  # a malformed report changes nothing
    st.session_state[BROWSER_KEY] = _owned(new)


def _owned(view: ViewState) -> str:
    return json.dumps(view_dict(view), sort_keys=True)


@st.fragment
def show(frames: RunFrames, layout: Layout, run_dir: str, stamp: tuple) -> None:
    """Mount the graph for the current view (inside a fragment: a report reruns only this)."""
    adopt_report()
    view = state.view()
    owned = _owned(view)
    if st.session_state.get(BROWSER_KEY) != owned:
        st.session_state[REV_KEY] = st.session_state.get(REV_KEY, 0) + 1
        st.session_state[BROWSER_KEY] = owned
    rev = st.session_state.get(REV_KEY, 0)
    base = _parts(run_dir, stamp, frames.snapshot_task, frames, layout)
    # The view inside the bytes only matters when ``rev`` is new; otherwise the browser keeps its
    # own, so a report never makes the server resend the run.
    identity = (base[0]["payload_id"], rev, view.presentation)
    cached = st.session_state.get(BYTES_KEY)
    if cached is None or cached[0] != identity:
        data = run_payload(
            frames, layout, view, view_rev=rev, style=state.figure_style(), base=base
        )
        st.session_state[BYTES_KEY] = cached = (identity, data)
    GRAPH(key=KEY, data=cached[1], default={"view": None}, on_view_change=lambda: None)
    state.write_url()
