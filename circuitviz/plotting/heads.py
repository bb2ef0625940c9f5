"""Layer x head heatmaps: attribution through each head, and per-head parameter change.

``head_changes`` frames are ``Run.head_changes()`` rows (step, layer, head, kind, rel_change) with
``rel_change = ||W_t - W_0|| / ||W_0||`` of one head's slice of W_Q, W_K, W_V or W_O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitviz.plotting import style as S
from circuitviz.plotting.layout import Layout

HEAD_KINDS = ("q", "k", "v", "o")


def head_attribution(layout: Layout, scores: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """``[n_layers, n_heads]``: summed score of every edge into or out of each head's box
    (``|score|`` unless ``signed``), i.e. how much of the task's attribution flows through it."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    if scores.shape != (layout.n_edges,):
        raise ValueError(f"scores must have {layout.n_edges} entries, got shape {scores.shape}")
    values = scores if signed else np.abs(scores)
    per_node = np.bincount(layout.edge_src_node, values, layout.n_nodes) + np.bincount(
        layout.edge_dst_node, values, layout.n_nodes
    )
    out = np.zeros((layout.n_layers, layout.n_heads))
    heads = np.flatnonzero(np.asarray(layout.node_kind) == "head")
    out[layout.node_layer[heads], layout.node_head[heads]] = per_node[heads]
    return out


def param_change_matrix(
    changes: pd.DataFrame, kind: str, n_layers: int, n_heads: int
) -> np.ndarray:
    """``[n_layers, n_heads]`` of ``rel_change`` for one kind (NaN where not recorded)."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")
    out = np.full((n_layers, n_heads), np.nan)
    rows = changes[(changes["kind"] == kind) & (changes["head"] >= 0)]
    layers = rows["layer"].to_numpy(dtype=int)
    heads = rows["head"].to_numpy(dtype=int)
    inside = (layers < n_layers) & (heads < n_heads)
    out[layers[inside], heads[inside]] = rows["rel_change"].to_numpy(dtype=float)[inside]
    return out


def head_heatmap_figure(
    panels: dict[str, np.ndarray],
    *,
    colorbar_title: str = "",
    diverging: bool = False,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """Side-by-side layer x head heatmaps with one shared colour scale (e.g. before | after).

    ``diverging`` centres a red-white-blue scale at 0 for signed values."""
    style = style or S.FigureStyle()
    if not panels:
        raise ValueError("head_heatmap_figure needs at least one panel")
    mats = list(panels.values())
    finite = np.concatenate([m[np.isfinite(m)] for m in mats]) if mats else np.zeros(1)
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top or 1.0
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), shared_yaxes=True)
    for i, matrix in enumerate(mats):
        fig.add_trace(
            _heatmap(matrix, top, diverging, colorbar_title, show_scale=i == len(panels) - 1),
            row=1,
            col=i + 1,
        )
    n_layers = mats[0].shape[0]
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, col=1)
    _finish(fig, style, n_layers)
    return fig


def param_change_figure(
    changes: dict[str, pd.DataFrame],
    n_layers: int,
    n_heads: int,
    *,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """The paper's parameter-difference map: one row per run (e.g. full fine-tuning, circuit-tuning),
    columns W_Q | W_K | W_V | W_O, each a layer x head heatmap of ||dW||/||W||; one shared "Blues"
    scale so the rows compare."""
    style = style or S.FigureStyle()
    if not changes:
        raise ValueError("param_change_figure needs at least one run's head changes")
    mats = {
        (label, kind): param_change_matrix(frame, kind, n_layers, n_heads)
        for label, frame in changes.items()
        for kind in HEAD_KINDS
    }
    values = np.concatenate([m[np.isfinite(m)].ravel() for m in mats.values()] + [np.zeros(1)])
    top = float(values.max()) or 1.0
    titles = [f"{label}: W_{kind.upper()}" for label in changes for kind in HEAD_KINDS]
    fig = make_subplots(
        rows=len(changes),
        cols=4,
        subplot_titles=titles,
        shared_yaxes=True,
        horizontal_spacing=0.03,
        vertical_spacing=0.14 if len(changes) > 1 else 0.1,
    )
    for r, label in enumerate(changes):
        for c, kind in enumerate(HEAD_KINDS):
            trace = go.Heatmap(
                z=mats[(label, kind)],
                zmin=0,
                zmax=top,
                colorscale="Blues",
                showscale=(r == 0 and c == 3),
                colorbar={"title": "‖ΔW‖/‖W‖"},
                hovertemplate=f"{label} W_{kind.upper()}<br>layer %{{y}} head %{{x}}"
                "<br>‖ΔW‖/‖W‖ %{z:.3g}<extra></extra>",
            )
            fig.add_trace(trace, row=r + 1, col=c + 1)
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_yaxes(dtick=max(1, n_layers // 6))
    fig.update_xaxes(dtick=max(1, n_heads // 4))
    _finish(fig, style, n_layers, rows=len(changes))
    return fig


def _heatmap(matrix, top, diverging, colorbar_title, *, show_scale) -> go.Heatmap:
    return go.Heatmap(
        z=matrix,
        zmin=-top if diverging else 0,
        zmax=top,
        zmid=0 if diverging else None,
        colorscale="RdBu" if diverging else "YlOrBr",
        showscale=show_scale,
        colorbar={"title": colorbar_title},
        hovertemplate="layer %{y} head %{x}<br>%{z:.4g}<extra></extra>",
    )


def _finish(fig: go.Figure, style: S.FigureStyle, n_layers: int, *, rows: int = 1) -> None:
    per_row = max(220, min(n_layers, 32) * 22 + 90)
    fig.update_layout(
        height=per_row * rows + 60,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        plot_bgcolor="white",
        paper_bgcolor="white",
        font={"family": style.font_family, "size": style.font_size, "color": "#222222"},
        hoverlabel={"font": {"size": style.font_size}},
    )
    fig.update_annotations(font_size=style.font_size)
