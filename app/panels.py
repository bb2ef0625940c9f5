"""Pieces of the Circuit page: play/pause, following a live run, node details, compare summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import state
import streamlit as st

from circuitviz.plotting.dynamics import node_history_figure
from circuitviz.plotting.edges import EdgeDiff
from circuitviz.plotting.layout import Layout
from circuitviz.plotting.rundata import RunFrames
from circuitviz.plotting.view import token_label

PLAY_KEY = "cv_playing"
FRESH_KEY = "cv_tick_fresh"
PLAY_SECONDS = 1.2
LIVE_SECONDS = 2.0


# ---- play / pause -------------------------------------------------------------------------------


def play_button(tokens: list[str]) -> None:
    playing = st.session_state.get(PLAY_KEY, False)
    label, icon = ("Pause", ":material/pause:") if playing else ("Play", ":material/play_arrow:")
    if st.button(label, icon=icon, width="stretch", key="play"):
        playing = not playing
        st.session_state[PLAY_KEY] = playing
        if playing and state.view().step == tokens[-1]:
            state.set_view(step=tokens[0])  # play from the start when sitting at the end
        st.rerun()
    if playing:
        st.session_state[FRESH_KEY] = True
        _tick(tokens)


@st.fragment(run_every=PLAY_SECONDS)
def _tick(tokens: list[str]) -> None:
    # A fragment runs once as part of the page and then every PLAY_SECONDS on its own; only the
    # timed runs advance the step (then redraw the whole page).
    if st.session_state.pop(FRESH_KEY, False) or not st.session_state.get(PLAY_KEY):
        return
    step = state.view().step
    position = tokens.index(step) if step in tokens else -1
    if position + 1 >= len(tokens):
        st.session_state[PLAY_KEY] = False
    else:
        state.set_view(step=tokens[position + 1])
    st.rerun()


# ---- following a run that is still being written ---------------------------------------------


def follow_live(frames: RunFrames) -> None:
    """While the run is running: re-read it every few seconds; if the view sat on the newest
    snapshot, move to the new newest one (the "during" view)."""
    if frames.status != "running":
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


# ---- the selected box ------------------------------------------------------------------------


OWNED = {
    "head": "its rows of W_Q, W_K and W_V (and their biases), its slice of W_O, and the layer's "
    "shared output bias b_O",
    "mlp": "the whole MLP of its layer (both weight matrices and biases)",
    "input": "nothing: embeddings are never tuned",
    "logits": "nothing: the unembedding is never tuned",
}


def node_details(frames: RunFrames, layout: Layout, row: int, node: str) -> None:
    index = layout.node_index()
    if node not in index:
        st.warning(f"{node!r} is not a box of this graph.")
        return
    n = index[node]
    kind = layout.node_kind[n]
    scores = frames.scores[row]
    touching = np.flatnonzero(layout.edges_of_node(n))
    order = touching[np.argsort(-np.abs(np.nan_to_num(scores[touching])), kind="stable")][:12]
    st.markdown(f"**{node}** owns {OWNED[kind]}.")
    table = pd.DataFrame(
        {
            "edge": [layout.edge_names[e].replace("->", " → ") for e in order],
            "score": scores[order],
            "in run's circuit": frames.selected[row][order],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", height=250)
    per_step = np.abs(np.nan_to_num(frames.scores[:, touching])).sum(axis=1)
    changes = frames.head_changes
    if kind == "head" and len(changes):
        head = int(layout.node_head[n])
        layer = int(layout.node_layer[n])
        changes = changes[(changes["layer"] == layer) & (changes["head"] == head)]
    elif kind == "mlp" and len(changes):
        changes = changes[
            (changes["layer"] == int(layout.node_layer[n])) & (changes["kind"] == "mlp")
        ]
    else:
        changes = changes.iloc[0:0]
    labels = [token_label(t, frames.snapshots) for t in frames.tokens]
    fig = node_history_figure(
        frames.snapshots["step"].to_numpy(),
        labels,
        per_step,
        changes,
        node=node,
        style=state.figure_style(),
    )
    st.plotly_chart(fig, theme=None, width="stretch", key="node_history")


def compare_summary(diff: EdgeDiff, has_noise: bool) -> None:
    counts = diff.counts()
    cols = st.columns(6)
    cols[0].metric("edge IoU", f"{diff.edge_iou:.2f}")
    cols[1].metric("node IoU", f"{diff.node_iou:.2f}")
    cols[2].metric("added", counts["added"])
    cols[3].metric("removed", counts["removed"])
    cols[4].metric("stronger / weaker", f"{counts['strengthened']} / {counts['weakened']}")
    cols[5].metric("sign flips", counts["flipped"])
    if has_noise:
        st.caption(
            f"{counts['noise']} changes are inside the noise floor (smaller than 2× the edge's "
            "rescoring standard deviation) and drawn light grey."
        )
    else:
        st.caption(
            "No rescoring for this run, so no noise floor: run `circuitviz rescore RUN` to grey out "
            "changes that batch noise alone could explain."
        )
