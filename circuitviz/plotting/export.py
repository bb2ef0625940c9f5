"""Everything a view can be exported as, shared by the dashboard's Export page and ``circuitviz
export``: SVG/PDF/PNG (matplotlib, no browser), self-contained interactive HTML, an animated GIF of
the step slider, the circuit as JSON (EAP-IG's format) and CSV, and the view state as JSON.

``export_view`` returns bytes; only ``save_export`` writes a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from circuitviz.attribution.config import SIGN_CONVENTION
from circuitviz.plotting import style as S
from circuitviz.plotting.circuit import circuit_figure, circuit_view
from circuitviz.plotting.layout import Layout
from circuitviz.plotting.rundata import RunFrames, resolve_view
from circuitviz.plotting.static import (
    STATIC_FORMATS,
    circuit_static_figure,
    gif_bytes,
    static_bytes,
)
from circuitviz.plotting.view import ViewState, token_label

FORMATS = (*STATIC_FORMATS, "html", "gif", "json", "csv", "view")
MIME = {
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "png": "image/png",
    "html": "text/html",
    "gif": "image/gif",
    "json": "application/json",
    "csv": "text/csv",
    "view": "application/json",
}
SUFFIX = {fmt: fmt for fmt in FORMATS} | {"view": "view.json"}


def figure_html(fig: go.Figure) -> str:
    """A self-contained interactive HTML page (plotly.js inlined: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def circuit_json(
    layout: Layout,
    scores: np.ndarray,
    shown: np.ndarray,
    *,
    graph_meta: dict,
    metadata: dict | None = None,
) -> dict:
    """The circuit in EAP-IG's JSON layout (``cfg``, ``nodes`` {name: in_graph}, ``edges`` {name:
    {score, in_graph}}), which MIB and EAP-IG load; ``shown`` (edge indices) are ``in_graph``.
    ``metadata`` (run, step, cut-off, sign convention) goes under ``metadata``, as
    ``circuitviz.graph.io.save_json`` writes it, so ``load_json`` reads these files back."""
    in_graph = np.zeros(layout.n_edges, bool)
    in_graph[shown] = True
    nodes_in = np.zeros(layout.n_nodes, bool)
    nodes_in[layout.edge_src_node[shown]] = True
    nodes_in[layout.edge_dst_node[shown]] = True
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64)).tolist()
    return {
        "cfg": dict(graph_meta),
        "nodes": {name: bool(on) for name, on in zip(layout.node_names, nodes_in.tolist())},
        "edges": {
            name: {"score": score, "in_graph": bool(on)}
            for name, score, on in zip(layout.edge_names, values, in_graph.tolist())
        },
        "metadata": metadata or {},
    }


def circuit_csv(
    layout: Layout,
    scores: np.ndarray,
    shown: np.ndarray,
    ranks: np.ndarray,
    *,
    selected: np.ndarray | None = None,
) -> str:
    """One row per shown edge, strongest first: edge, src, dst, score, rank (of all edges), and
    whether the run's own circuit holds it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["edge", "src", "dst", "score", "rank", "in_run_circuit"])
    for e in np.asarray(shown).tolist():
        name = layout.edge_names[e]
        src, dst = name.split("->")
        in_circuit = "" if selected is None else int(bool(selected[e]))
        writer.writerow([name, src, dst, f"{float(scores[e]):.6g}", int(ranks[e]), in_circuit])
    return buffer.getvalue()


def export_view(
    frames: RunFrames,
    layout: Layout,
    view: ViewState,
    fmt: str,
    *,
    style: S.FigureStyle | None = None,
    max_gif_frames: int = 40,
) -> bytes:
    """The view in format ``fmt`` (one of ``FORMATS``). KeyError for a step the run lacks."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    style = style or (S.FigureStyle.presentation() if view.presentation else S.FigureStyle())
    if fmt == "view":
        return view.to_json().encode()
    if fmt == "gif":
        return _gif(frames, layout, view, style, max_gif_frames)
    resolved = resolve_view(frames, view)
    kwargs = _figure_kwargs(frames, view, resolved)
    if fmt in STATIC_FORMATS:
        fig = circuit_static_figure(
            layout, resolved.scores, resolved.selected, style=style, **kwargs
        )
        return static_bytes(fig, fmt)
    if fmt == "html":
        fig = circuit_figure(layout, resolved.scores, resolved.selected, style=style, **kwargs)
        return figure_html(fig).encode()
    shown = circuit_view(
        layout,
        resolved.scores,
        resolved.selected,
        threshold=view.threshold,
        top_n=view.top_n,
        only_selected=view.only_circuit,
    )
    if fmt == "csv":
        return circuit_csv(
            layout, resolved.scores, shown.edges, shown.ranks, selected=resolved.selected
        ).encode()
    n_layers, n_heads, n_kv_heads, paper = frames.graph_shape
    payload = circuit_json(
        layout,
        resolved.scores,
        shown.edges,
        graph_meta={
            "n_layers": n_layers,
            "n_heads": n_heads,
            "n_kv_heads": n_kv_heads,
            "paper_graph": paper,
        },
        metadata={
            "run": frames.run_id,
            "step": resolved.token_b,
            "threshold": view.threshold,
            "top_n": view.top_n,
            "model": frames.model_spec,
            "task": frames.task,
            "method": frames.method,
            "sign": SIGN_CONVENTION,
        },
    )
    return json.dumps(payload).encode()


def save_export(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(data)
    return path


def format_for_path(path: str | Path) -> str:
    """The export format a file name asks for (``x.view.json`` is a view state, ``x.json`` a
    circuit)."""
    name = Path(path).name.lower()
    if name.endswith(".view.json"):
        return "view"
    suffix = Path(name).suffix.lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {Path(path).name!r}: use one of "
            + ", ".join(f".{SUFFIX[f]}" for f in FORMATS)
            + " or pass --format"
        )
    return suffix


def _figure_kwargs(frames: RunFrames, view: ViewState, resolved) -> dict:
    return {
        "threshold": view.threshold,
        "top_n": view.top_n,
        "highlight": view.node,
        "compare": resolved.compare,
        "noise_floor": frames.noise_std if resolved.compare is not None else None,
        "only_selected": view.only_circuit,
        "color_by": view.color_by,
        "title": resolved.title,
    }


def _gif(frames: RunFrames, layout, view, style, max_frames: int) -> bytes:
    """One frame per snapshot (evenly thinned to ``max_frames``) at the view's cut-off."""
    tokens = frames.tokens
    if not tokens:
        raise KeyError("this run has no circuit snapshots yet")
    keep = np.unique(
        np.linspace(0, len(tokens) - 1, min(len(tokens), max_frames)).round().astype(int)
    )

    def figures():
        for row in keep.tolist():
            frame_view = view.with_(step=tokens[row], compare=None)
            resolved = resolve_view(frames, frame_view)
            kwargs = _figure_kwargs(frames, frame_view, resolved)
            kwargs["title"] = f"{frames.label()}: {token_label(tokens[row], frames.snapshots)}"
            yield circuit_static_figure(
                layout, resolved.scores, resolved.selected, style=style, **kwargs
            )

    return gif_bytes(figures())
