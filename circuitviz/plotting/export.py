"""Everything a view can be exported as, shared by the dashboard's Export page and ``circuitviz
export``: SVG/PDF/PNG (matplotlib, no browser), self-contained interactive HTML of the step (plotly)
or of the whole run with its step slider (``.player.html``: the dashboard's own renderer, offline),
an animated GIF of the step slider, the circuit as JSON (EAP-IG's format) and CSV, and the view
state as JSON.

``export_view`` returns bytes; only ``save_export`` writes a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from circuitviz.graph.sign import SIGN_CONVENTION
from circuitviz.plotting import style as S
from circuitviz.plotting.circuit import circuit_figure
from circuitviz.plotting.edges import select_edges
from circuitviz.plotting.layout import Layout
from circuitviz.plotting.rundata import RunFrames, resolve_view, view_scenes
from circuitviz.plotting.static import (
    STATIC_FORMATS,
    circuit_static_figure,
    gif_bytes,
    static_bytes,
)
from circuitviz.plotting.view import ViewState, token_label
from circuitviz.plotting.web import interactive_html

FORMATS = (*STATIC_FORMATS, "html", "player", "gif", "json", "csv", "graphml", "gexf", "view")
MIME = {
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "png": "image/png",
    "html": "text/html",
    "player": "text/html",
    "gif": "image/gif",
    "json": "application/json",
    "csv": "text/csv",
    "graphml": "application/xml",
    "gexf": "application/xml",
    "view": "application/json",
}
SUFFIX = {fmt: fmt for fmt in FORMATS} | {"view": "view.json", "player": "player.html"}


def figure_html(fig: go.Figure) -> str:
    """A plotly figure as a self-contained HTML page (plotly.js inlined: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def circuit_json(
    layout: Layout,
    scores: np.ndarray,
    shown: np.ndarray,
    *,
    graph_meta: dict,
    metadata: dict | None = None,
) -> dict:
    """The circuit in EAP-IG's JSON layout (``cfg``, ``nodes`` {name: {"in_graph": bool}},
    ``edges`` {name: {score, in_graph}}), which MIB and EAP-IG's ``Graph.from_json`` load;
    ``shown`` (edge indices) are ``in_graph``.
    ``metadata`` (run, step, cut-off, sign convention) goes under ``metadata``, as
    ``circuitviz.graph.io.save_json`` writes it, so ``load_json`` reads these files back."""
    in_graph = np.zeros(layout.n_edges, bool)
    in_graph[shown] = True
    nodes_in = np.zeros(layout.n_nodes, bool)
    nodes_in[layout.edge_src_node[shown]] = True
    nodes_in[layout.edge_dst_node[shown]] = True
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64)).tolist()
    return {
        "cfg": {"parallel_attn_mlp": False, **graph_meta},
        "nodes": {
            name: {"in_graph": bool(on)} for name, on in zip(layout.node_names, nodes_in.tolist())
        },
        "edges": {
            name: {"score": score, "in_graph": bool(on)}
            for name, score, on in zip(layout.edge_names, values, in_graph.tolist())
        },
        "metadata": metadata or {},
    }


def read_circuit_json(path: str | Path) -> tuple[Layout, np.ndarray, np.ndarray]:
    """(layout, scores, in_graph) of a circuit file in EAP-IG's JSON layout (what ``circuitviz
    discover --out`` and ``circuit_json`` write), without torch. ValueError naming the file for
    anything else."""
    from circuitviz.plotting.layout import layout_for

    name = Path(path).name
    try:
        payload = json.loads(Path(path).read_text())
        cfg = payload["cfg"]
        n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
        n_kv = int(cfg.get("n_kv_heads") or n_heads)
        edges = payload["edges"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{name}: not a circuit file ({exc.__class__.__name__})") from exc
    ends = any(e.startswith("input->") or e.endswith("->logits") for e in edges)
    paper = bool(cfg.get("paper_graph", not ends and "input" not in payload.get("nodes", {})))
    layout = layout_for(n_layers, n_heads, n_kv, paper=paper)
    index = {edge: i for i, edge in enumerate(layout.edge_names)}
    scores = np.zeros(layout.n_edges, np.float32)
    in_graph = np.zeros(layout.n_edges, bool)
    for edge, entry in edges.items():
        if edge not in index or not isinstance(entry, dict):
            raise ValueError(f"{name}: {edge!r} is not an edge of the graph its cfg describes")
        scores[index[edge]] = float(entry.get("score") or 0.0)
        in_graph[index[edge]] = bool(entry.get("in_graph"))
    return layout, scores, in_graph


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
    if fmt == "player":
        return interactive_html(frames, layout, view, style=style).encode()
    resolved = resolve_view(frames, view)
    ((scene, title),) = view_scenes(frames, layout, view, style=style, side_by_side=False)
    if fmt in STATIC_FORMATS:
        return static_bytes(circuit_static_figure(scene, title=title, style=style), fmt)
    if fmt == "html":
        return figure_html(circuit_figure(scene, title=title, style=style)).encode()
    # Files list the step's own shown edges (a comparison draws the union of two steps; focus
    # mode draws only the paths through one box).
    within = resolved.selected if view.only_circuit else None
    shown = select_edges(resolved.scores, threshold=view.threshold, top_n=view.top_n, within=within)
    if fmt == "csv":
        return circuit_csv(
            layout, resolved.scores, shown, scene.ranks, selected=resolved.selected
        ).encode()
    if fmt in ("graphml", "gexf"):
        from circuitviz.graph.digraph import build_network, network_bytes

        in_circuit = np.zeros(layout.n_edges, bool)
        in_circuit[shown] = True
        network = build_network(
            layout.edge_names,
            resolved.scores,
            in_circuit,
            shape=frames.graph_shape[:4],
            metadata={"run": frames.run_id, "step": resolved.token_b, "task": frames.task},
        )
        return network_bytes(network, fmt)
    n_layers, n_heads, n_kv_heads, paper = frames.graph_shape
    payload = circuit_json(
        layout,
        resolved.scores,
        shown,
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
    if name.endswith(".player.html"):
        return "player"
    suffix = Path(name).suffix.lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {Path(path).name!r}: use one of "
            + ", ".join(f".{SUFFIX[f]}" for f in FORMATS)
            + " or pass --format"
        )
    return suffix


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
            ((scene, _),) = view_scenes(frames, layout, frame_view, style=style)
            title = f"{frames.label()}: {token_label(tokens[row], frames.snapshots)}"
            yield circuit_static_figure(scene, title=title, style=style)

    return gif_bytes(figures())
