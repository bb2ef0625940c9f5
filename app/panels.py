"""Following a run that is still being written: re-read it every few seconds, and move to the newest
snapshot when the view sat on the newest one (the "during" view)."""

from __future__ import annotations

import state
import streamlit as st

from circuitviz.plotting.rundata import RunFrames

LIVE_SECONDS = 2.0


def follow_live(frames: RunFrames) -> None:
    if frames.status != "running":
        return
    if frames.shown_status == "stopped":
        st.caption(
            ":gray-badge[stopped] This run stopped before it finished (its process is gone); every "
            "step it recorded is here. `circuitviz tune --resume RUN` continues it."
        )
        return
    st.caption(
        ":green-badge[live] This run is still being written: new snapshots appear here as they land."
    )
    run_dir = state.store().run_dirs().get(frames.run_id)
    if run_dir is None:
        return
    st.session_state["cv_live_stamp"] = state.run_stamp(run_dir)
    st.session_state["cv_live_latest"] = state.view().step in (None, *frames.tokens[-1:])
    _poll(str(run_dir))


@st.fragment(run_every=LIVE_SECONDS)
def _poll(run_dir: str) -> None:
    stamp = state.run_stamp(run_dir)
    if stamp == st.session_state.get("cv_live_stamp"):
        return
    if st.session_state.get("cv_live_latest"):
        state.set_view(step=None)
    st.rerun()
