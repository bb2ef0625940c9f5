"""The browser renderer of circuit scenes: a run's data packed once, redrawn in the browser.

``web/circuit.js`` recomputes the scene of ``circuitviz.plotting.scene`` (the oracle it is tested
against) and draws it on a canvas whenever the step, top-N, threshold or any other view setting
changes, without asking the server. The dashboard mounts it as a Streamlit component; an exported
HTML page embeds it with the same data, so a downloaded file scrubs through the run offline.

``run_payload`` packs what the renderer needs, in one binary message:

1. ``CVZ1``, a little-endian uint32 header length, the header as UTF-8 JSON, zero padding to a
   multiple of 8 bytes;
2. the arrays the header lists (name, dtype, length, byte offset from the end of the padding):
   the graph's edges (writer/reader name indices, boxes, reader kind, the seven route numbers), every
   snapshot's scores (float16 bits, as the run store keeps them) and circuit masks (bit-packed),
   the noise floor, per-head parameter changes, and the analyses boxes can be coloured by.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict
from functools import cache
from pathlib import Path

import numpy as np

from circuitviz.plotting import style as S
from circuitviz.plotting.edges import DIFF_CATEGORIES
from circuitviz.plotting.layout import N_CURVE_POINTS, Layout
from circuitviz.plotting.rundata import RunFrames, node_color_modes, node_values
from circuitviz.plotting.scene import (
    COLLAPSED_BAND,
    DOTTED_LABEL,
    FADED_LABEL,
    FADED_OPACITY,
    FADED_WIDTH,
    FILL_LEVELS,
    KIND_FILL,
    LEGEND_ORDER,
    MIN_FILL,
    OPACITIES,
    WIDTH_BINS,
    WIDTHS,
)
from circuitviz.plotting.view import ViewState, token_label

MAGIC = b"CVZ1"
HERE = Path(__file__).resolve().parent
# What a box's parameters are, as the node details panel says it.
OWNED = {
    "head": "its rows of W_Q, W_K and W_V (and their biases) and its slice of W_O",
    "kv": "the rows of W_K and W_V (and their biases) its query heads share",
    "mlp": "the whole MLP of its layer (both weight matrices and biases)",
    "input": "nothing: embeddings are never tuned",
    "logits": "nothing: the unembedding is never tuned",
}


@cache
def renderer_js() -> str:
    """The renderer's JavaScript (an ES module; its default export mounts a Streamlit component)."""
    return (HERE / "circuit.js").read_text()


@cache
def renderer_css() -> str:
    return (HERE / "circuit.css").read_text()


def style_constants(style: S.FigureStyle | None = None) -> dict:
    """Every colour, width and rule constant the renderer needs: one source, this package."""
    style = style or S.FigureStyle()
    return {
        "helps": S.HELPS,
        "hurts": S.HURTS,
        "helps_label": S.HELPS_LABEL,
        "hurts_label": S.HURTS_LABEL,
        "faded": S.FADED,
        "faded_width": FADED_WIDTH,
        "faded_opacity": FADED_OPACITY,
        "faded_label": FADED_LABEL,
        "dotted_label": DOTTED_LABEL,
        "dotted_sample": S.DOTTED_SAMPLE,
        "target_colors": S.TARGET_COLORS,
        "diff_categories": list(DIFF_CATEGORIES),
        "diff_colors": S.DIFF_COLORS,
        "diff_labels": S.DIFF_LABELS,
        "kind_fill": KIND_FILL,
        "idle_fill": S.IDLE_FILL,
        "node_line": S.NODE_LINE,
        "circuit_line": S.CIRCUIT_LINE,
        "highlight_line": S.HIGHLIGHT_LINE,
        "width_bins": list(WIDTH_BINS),
        "widths": list(WIDTHS),
        "opacities": list(OPACITIES),
        "min_fill": MIN_FILL,
        "fill_levels": FILL_LEVELS,
        "collapsed_band": COLLAPSED_BAND,
        "legend_order": LEGEND_ORDER,
        "rel_tol": 0.1,
        "noise_k": 2.0,
        "curve_points": N_CURVE_POINTS,
        "line_scale": style.line_scale,
        "font_size": style.font_size,
        "label_size": style.label_size,
        "title_size": style.title_size,
        "font_family": style.font_family,
        "owned": OWNED,
        "role_fill": S.ROLE_FILL,
        "no_value_fill": S.NO_VALUE_FILL,
        "node_color_labels": {mode: list(labels) for mode, labels in S.NODE_COLOR_LABELS.items()},
        "role_labels": S.ROLE_LABELS,
    }


def view_dict(view: ViewState) -> dict:
    """The parts of a view the renderer owns (the rest stays on the server)."""
    data = asdict(view)
    return {
        key: data[key]
        for key in (
            "run",
            "step",
            "threshold",
            "top_n",
            "node",
            "compare",
            "compare_mode",
            "color_by",
            "node_color",
            "only_circuit",
            "focus",
            "collapse",
        )
    }


def run_payload(
    frames: RunFrames,
    layout: Layout,
    view: ViewState,
    *,
    view_rev: int = 0,
    style: S.FigureStyle | None = None,
    notices: tuple[str, ...] = (),
    base: tuple[dict, list[tuple[str, np.ndarray]]] | None = None,
) -> bytes:
    """The renderer's message for a run (see the module docstring). ``base`` is
    ``payload_parts(frames, layout)`` when the caller cached it (it is the expensive part)."""
    header, arrays = base if base is not None else payload_parts(frames, layout)
    constants = style_constants(style)
    # A new style is a new picture: the renderer rebuilds when the id changes.
    styled = json.dumps([header["payload_id"], constants, view.presentation], sort_keys=True)
    header = {
        **header,
        "payload_id": hashlib.sha256(styled.encode()).hexdigest()[:24],
        "view": view_dict(view),
        "view_rev": int(view_rev),
        "presentation": bool(view.presentation),
        "style": constants,
        "notices": list(notices),
    }
    return encode(header, arrays)


def payload_parts(frames: RunFrames, layout: Layout) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """(header, arrays) of a run that do not depend on the view."""
    if frames.scores.shape[1] != layout.n_edges:
        raise ValueError(
            f"the run has {frames.scores.shape[1]} edges per snapshot but the layout "
            f"{layout.n_edges}"
        )
    box_values, value_arrays = _node_values(frames, layout)
    arrays = _graph_arrays(layout) + _run_arrays(frames) + value_arrays
    digest = hashlib.sha256()
    for name, values in arrays:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    header = {
        "payload_id": digest.hexdigest()[:24],
        "run": _run_header(frames),
        "graph": _graph_header(layout),
        "evals": _evals(frames),
        "node_values": box_values,
    }
    return header, arrays


def _node_values(frames: RunFrames, layout: Layout) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """The analyses boxes can be coloured by (``rundata.node_values``): per mode its steps, scale
    and rule in the header, its ``[n_steps, n_nodes]`` float32 values as ``node_values:MODE``."""
    header, arrays = {}, []
    for mode in node_color_modes(frames)[1:]:
        values = node_values(frames, layout, mode)
        header[mode] = {
            "steps": values.steps.tolist(),
            "scale": values.scale,
            "sqrt": values.sqrt,
        }
        arrays.append((f"node_values:{mode}", values.values.ravel()))
    return header, arrays


def _graph_header(layout: Layout) -> dict:
    return {
        "n_layers": layout.n_layers,
        "n_heads": layout.n_heads,
        "n_kv_heads": layout.n_kv_heads,
        "paper": layout.paper,
        "n_edges": layout.n_edges,
        "node_names": list(layout.node_names),
        "node_kind": list(layout.node_kind),
        "node_layer": layout.node_layer.tolist(),
        "node_head": layout.node_head.tolist(),
        "node_x": layout.node_x.tolist(),
        "node_y": layout.node_y.tolist(),
        "node_w": layout.node_w.tolist(),
        "node_h": layout.node_h.tolist(),
        "src_names": list(layout.src_names),
        "dst_names": list(layout.dst_names),
        "x_range": list(layout.x_range()),
        "y_range": list(layout.y_range()),
        "band_edges": layout.band_edges().tolist(),
    }


def _graph_arrays(layout: Layout) -> list[tuple[str, np.ndarray]]:
    index = np.uint16 if max(layout.n_nodes, len(layout.dst_names)) < 65536 else np.uint32
    return [
        ("edge_src", layout.edge_src.astype(index)),
        ("edge_dst", layout.edge_dst.astype(index)),
        ("edge_src_node", layout.edge_src_node.astype(index)),
        ("edge_dst_node", layout.edge_dst_node.astype(index)),
        ("edge_target", layout.edge_target.astype(np.uint8)),
        ("edge_route", layout.edge_route.astype(np.float32).ravel()),
    ]


def _run_arrays(frames: RunFrames) -> list[tuple[str, np.ndarray]]:
    scores = np.asarray(frames.scores, dtype=np.float32)
    half = scores.astype(np.float16)
    exact = np.array_equal(half.astype(np.float32), scores, equal_nan=True)
    arrays = [
        ("scores", half.view(np.uint16).ravel() if exact else scores.ravel()),
        ("selected", np.packbits(frames.selected, axis=1, bitorder="little").ravel()),
    ]
    if frames.noise_std is not None:
        arrays.append(("noise_std", np.asarray(frames.noise_std, dtype=np.float32)))
    changes = frames.head_changes
    if len(changes):
        kinds = {"q": 0, "k": 1, "v": 2, "o": 3, "mlp": 4}
        arrays += [
            ("change_step", changes["step"].to_numpy(dtype=np.float32)),
            ("change_layer", changes["layer"].to_numpy(dtype=np.float32)),
            ("change_head", changes["head"].fillna(-1).to_numpy(dtype=np.float32)),
            ("change_kind", changes["kind"].map(kinds).fillna(4).to_numpy(dtype=np.uint8)),
            ("change_value", changes["rel_change"].to_numpy(dtype=np.float32)),
        ]
    return arrays


def _run_header(frames: RunFrames) -> dict:
    tokens = frames.tokens
    config = frames.config or {}
    return {
        "id": frames.run_id,
        "label": frames.label(),
        "status": frames.shown_status,
        "task": frames.snapshot_task or frames.task,
        "method": frames.method,
        "model": frames.model_spec,
        "tokens": tokens,
        "token_labels": [token_label(t, frames.snapshots) for t in tokens],
        "token_steps": frames.snapshots["step"].astype(float).tolist(),
        "scores_dtype": "float16" if _half_exact(frames.scores) else "float32",
        "top_n": config.get("top_n"),
        "every": config.get("every"),
        "has_noise": frames.noise_std is not None,
    }


def _half_exact(scores: np.ndarray) -> bool:
    scores = np.asarray(scores, dtype=np.float32)
    return bool(
        np.array_equal(scores.astype(np.float16).astype(np.float32), scores, equal_nan=True)
    )


def _evals(frames: RunFrames) -> dict:
    evals = frames.evals
    out: dict[str, list] = {"step": evals["step"].astype(float).tolist() if len(evals) else []}
    for column in ("accuracy", "task_metric", "lm_loss"):
        if column in evals and len(evals):
            out[column] = [None if np.isnan(v) else float(v) for v in evals[column].astype(float)]
    return out


def encode(header: dict, arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """Pack a header and arrays as described in the module docstring."""
    offset = 0
    listed = []
    blobs = []
    for name, values in arrays:
        values = np.ascontiguousarray(values)
        pad = (-offset) % 8
        if pad:
            blobs.append(b"\0" * pad)
            offset += pad
        listed.append(
            {"name": name, "dtype": values.dtype.name, "length": int(values.size), "offset": offset}
        )
        blob = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps({**header, "arrays": listed}, separators=(",", ":"), allow_nan=False)
    encoded = text.encode()
    head = MAGIC + struct.pack("<I", len(encoded)) + encoded
    head += b"\0" * ((-len(head)) % 8)
    return head + b"".join(blobs)


def decode(payload: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The inverse of ``encode`` (for tests and tools)."""
    if payload[:4] != MAGIC:
        raise ValueError("not a circuitviz renderer payload (bad magic)")
    (length,) = struct.unpack("<I", payload[4:8])
    header = json.loads(payload[8 : 8 + length])
    start = 8 + length
    start += (-start) % 8
    arrays = {}
    for item in header.pop("arrays"):
        dtype = np.dtype(item["dtype"]).newbyteorder("<")
        begin = start + item["offset"]
        arrays[item["name"]] = np.frombuffer(
            payload, dtype=dtype, count=item["length"], offset=begin
        )
    return header, arrays


def interactive_html(
    frames: RunFrames, layout: Layout, view: ViewState, *, style: S.FigureStyle | None = None
) -> str:
    """A self-contained page with the browser renderer and the whole run: the step slider, top-N,
    threshold, compare and node details work offline, exactly as in the dashboard."""
    import base64

    payload = base64.b64encode(run_payload(frames, layout, view, style=style)).decode()
    title = f"circuitviz: {frames.label()}"
    script = renderer_js().replace("export default function", "function mountComponent")
    return _HTML.format(title=_escape(title), css=renderer_css(), script=script, payload=payload)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 12px; font-family: Helvetica, Arial, sans-serif; }}
{css}</style></head>
<body><div id="circuitviz-root"></div>
<script>
{script}
const bytes = Uint8Array.from(atob("{payload}"), (c) => c.charCodeAt(0));
mountComponent({{ data: bytes, parentElement: document.getElementById("circuitviz-root"),
                  key: "standalone", setStateValue: null }});
</script></body></html>
"""
