"""The circuit graph of one step (or the difference between two steps) as a plotly figure.

Speed matters here: a slider move redraws this figure. Edges are therefore batched into a few
scatter traces, one per (colour class, width bin), with the curves of all edges of a trace joined by
NaN gaps; never one trace per edge. Hover text lives on one invisible marker per edge at the curve's
midpoint, so the line traces carry no per-point text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from circuitviz.graph.topology import Graph
from circuitviz.plotting import style as S
from circuitviz.plotting.edges import (
    DIFF_CATEGORIES,
    diff_edges,
    edge_ranks,
    rank_order,
    select_edges,
)
from circuitviz.plotting.layout import BOX_H, N_CURVE_POINTS, TARGET_CODES, Layout, build_layout

DOTTED_LABEL = "dotted: score > 0"
WIDTH_BINS = (0.15, 0.35, 0.65)  # |score| / max |score| shown
WIDTHS = (0.8, 1.6, 2.8, 4.5)
OPACITIES = (0.45, 0.6, 0.75, 0.9)
TARGET_NAMES = {code: name for name, code in TARGET_CODES.items()}


@dataclass(frozen=True, eq=False)
class CircuitView:
    """What a circuit figure shows, for callers that also list or export it (same rules as the
    figure): ``edges`` strongest first, ``ranks`` over all edges, and the diff when comparing."""

    edges: np.ndarray
    ranks: np.ndarray
    diff: object | None = None  # EdgeDiff


def circuit_view(
    layout: Layout,
    scores: np.ndarray,
    selected_mask: np.ndarray | None = None,
    *,
    threshold: float = 0.0,
    top_n: int | None = None,
    only_selected: bool = False,
    compare: np.ndarray | None = None,
    noise_floor: np.ndarray | None = None,
    noise_k: float = 2.0,
) -> CircuitView:
    scores = _check_vector("scores", scores, layout.n_edges)
    order = rank_order(scores)
    within = None
    if only_selected:
        if selected_mask is None:
            raise ValueError("only_selected=True needs selected_mask")
        within = _check_vector("selected_mask", selected_mask, layout.n_edges).astype(bool)
    edges = select_edges(scores, threshold=threshold, top_n=top_n, within=within, order=order)
    diff = None
    if compare is not None:
        compare = _check_vector("compare", compare, layout.n_edges)
        if noise_floor is not None:
            noise_floor = _check_vector("noise_floor", noise_floor, layout.n_edges)
        diff = diff_edges(
            compare,
            scores,
            threshold=threshold,
            top_n=top_n,
            noise_std=noise_floor,
            noise_k=noise_k,
            edge_src_node=layout.edge_src_node,
            edge_dst_node=layout.edge_dst_node,
        )
    return CircuitView(edges=edges, ranks=edge_ranks(order), diff=diff)


def circuit_figure(
    graph: Graph | Layout,
    scores: np.ndarray,
    selected_mask: np.ndarray | None = None,
    *,
    threshold: float = 0.0,
    top_n: int | None = None,
    highlight: str | None = None,
    compare: np.ndarray | None = None,
    noise_floor: np.ndarray | None = None,
    noise_k: float = 2.0,
    only_selected: bool = False,
    color_by: S.ColorBy = "sign",
    title: str | None = None,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """The edge graph of one step.

    ``graph``: a Graph, or its ``build_layout`` (pass the layout when redrawing often).
    ``scores``: signed per-edge scores in canonical edge order. ``selected_mask``: the run's own
    circuit at this step (the edges whose nodes it trains); their boxes get a dark outline, and
    ``only_selected`` restricts the view to them. Shown edges: ``|score| >= threshold``, then the
    ``top_n`` strongest. ``highlight``: a box name (``a3.h1``, ``m2``, ``input``, ``logits``) whose
    edges stay coloured while the rest fade. ``compare``: the scores of another step (A); the figure
    then colours each edge by how this step (B) differs from A, greying changes smaller than
    ``noise_k`` times ``noise_floor`` (per-edge rescoring std) when that is given.
    """
    layout = graph if isinstance(graph, Layout) else build_layout(graph)
    style = style or S.FigureStyle()
    if color_by not in ("sign", "target"):
        raise ValueError(f"color_by must be 'sign' or 'target', got {color_by!r}")
    view = circuit_view(
        layout,
        scores,
        selected_mask,
        threshold=threshold,
        top_n=top_n,
        only_selected=only_selected,
        compare=compare,
        noise_floor=noise_floor,
        noise_k=noise_k,
    )
    scores = np.asarray(scores, dtype=np.float64)
    focus = _highlight_index(layout, highlight)
    groups = edge_groups(
        layout,
        scores,
        view,
        compare=compare,
        focus=focus,
        color_by=color_by,
        line_scale=style.line_scale,
    )
    traces = [_line_trace(layout, group) for group in groups]
    if view.diff is None:
        edges = view.edges
        hover = _edge_hover(layout, scores, edges, view.ranks, None, None)
    else:
        edges = view.diff.edges
        a = np.asarray(compare, dtype=np.float64)
        hover = _edge_hover(layout, scores, edges, view.ranks, a, view.diff.category)
    fig = go.Figure(
        data=[
            *traces,  # edges under the boxes, as in the paper's figures
            *_node_traces(layout, edges, selected_mask, focus, scores, style),
            _edge_hover_trace(layout, edges, hover),
            _node_hover_trace(layout, scores, edges),
            *(legend := _legend_traces(groups, style.line_scale)),
        ]
    )
    n_legend = len(legend) + int(selected_mask is not None)
    _apply_layout(fig, layout, style, title, n_legend)
    return fig


def _check_vector(name: str, values, n_edges: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n_edges,):
        raise ValueError(
            f"{name} must have one entry per valid edge ({n_edges}), got shape {values.shape}; "
            "is it from another model's graph?"
        )
    return values


def _highlight_index(layout: Layout, highlight: str | None) -> int | None:
    if highlight is None:
        return None
    index = layout.node_index()
    if highlight not in index:
        raise ValueError(
            f"highlight {highlight!r} is not a box of this graph (e.g. a0.h0, m0, input, logits)"
        )
    return index[highlight]


def _bins(strength: np.ndarray) -> np.ndarray:
    top = float(strength.max()) if len(strength) else 1.0
    return np.digitize(strength / (top or 1.0), WIDTH_BINS)


def _curve_xy(layout: Layout, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the given edges' curves joined by NaN gaps: ``[len(edges) * (points + 1)]``."""
    curves = layout.edge_curves[edges]  # [n, points, 2]
    gap = np.full((len(edges), 1, 2), np.nan, dtype=np.float32)
    joined = np.concatenate([curves, gap], axis=1).reshape(-1, 2)
    return joined[:, 0], joined[:, 1]


@dataclass(frozen=True, eq=False)
class EdgeGroup:
    """Edges drawn alike: one plotly trace, one matplotlib LineCollection."""

    edges: np.ndarray
    color: str
    width: float
    opacity: float
    label: str
    dash: str = "solid"  # "solid" | "dot"
    legend: bool = False


def edge_groups(
    layout: Layout,
    scores: np.ndarray,
    view: CircuitView,
    *,
    compare: np.ndarray | None = None,
    focus: int | None = None,
    color_by: S.ColorBy = "sign",
    line_scale: float = 1.0,
) -> list[EdgeGroup]:
    """How to draw the shown edges, weakest first (so strong edges end up on top)."""
    scores = np.asarray(scores, dtype=np.float64)
    n_shown = len(view.edges) if view.diff is None else len(view.diff.edges)
    line_scale *= density_scale(n_shown)
    if view.diff is not None:
        a = np.asarray(compare, dtype=np.float64)
        groups = _diff_groups(layout, a, scores, view.diff, focus, line_scale)
    else:
        groups = _sign_groups(layout, scores, view.edges, focus, color_by, line_scale)
    return sorted(groups, key=lambda group: group.width)


def density_scale(n_shown: int) -> float:
    """Thinner lines when many edges are shown, so that a dense view stays readable."""
    return float(np.clip(np.sqrt(150 / max(n_shown, 1)), 0.4, 1.0))


def _sign_groups(layout, scores, edges, focus, color_by, line_scale) -> list[EdgeGroup]:
    groups: list[EdgeGroup] = []
    if focus is not None:
        touching = layout.edges_of_node(focus)[edges]
        if (~touching).any():
            groups.append(EdgeGroup(edges[~touching], S.FADED, 0.7, 0.5, "other edges"))
        edges = edges[touching]
    bins = _bins(np.abs(scores[edges]))
    negative = scores[edges] < 0
    if color_by == "sign":
        classes = [
            (S.HELPS_LABEL, negative, S.HELPS, "solid"),
            (S.HURTS_LABEL, ~negative, S.HURTS, "solid"),
        ]
    else:  # hue by the reader; dotted when the edge works against the answer
        target = layout.edge_target[edges]
        classes = []
        for name, color in S.TARGET_COLORS.items():
            is_target = target == TARGET_CODES[name]
            classes.append((f"into {name}", is_target & negative, color, "solid"))
            classes.append((f"into {name}", is_target & ~negative, color, "dot"))
        if (~negative).any():  # one legend entry explains the dots for every colour
            groups.append(EdgeGroup(edges[:0], "#555555", 0.0, 1.0, DOTTED_LABEL, "dot", True))
    for label, members, color, dash in classes:
        first = dash == "solid" or color_by == "sign"  # one legend entry per class
        for level in reversed(range(len(WIDTHS))):
            chosen = edges[members & (bins == level)]
            if len(chosen):
                width = WIDTHS[level] * line_scale
                groups.append(
                    EdgeGroup(chosen, color, width, OPACITIES[level], label, dash, legend=first)
                )
                first = False
    return groups


def _diff_groups(layout, a, b, diff, focus, line_scale) -> list[EdgeGroup]:
    strength = np.maximum(
        np.abs(np.nan_to_num(a[diff.edges])), np.abs(np.nan_to_num(b[diff.edges]))
    )
    bins = _bins(strength)
    dim = np.zeros(len(diff.edges), bool)
    if focus is not None:
        dim = ~layout.edges_of_node(focus)[diff.edges]
    faded = diff.edges[dim]
    groups = [EdgeGroup(faded, S.FADED, 0.7, 0.5, "other edges")] if len(faded) else []
    for code, name in enumerate(DIFF_CATEGORIES):
        first = True
        for level in reversed(range(len(WIDTHS))):
            chosen = diff.edges[(diff.category == code) & (bins == level) & ~dim]
            if len(chosen):
                groups.append(
                    EdgeGroup(
                        chosen,
                        S.DIFF_COLORS[name],
                        WIDTHS[level] * line_scale,
                        OPACITIES[level],
                        S.DIFF_LABELS[name],
                        "dot" if name == "removed" else "solid",
                        legend=first,
                    )
                )
                first = False
    return groups


def _line_trace(layout: Layout, group: EdgeGroup) -> go.Scatter:
    x, y = _curve_xy(layout, group.edges)
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        line={"color": group.color, "width": group.width, "dash": group.dash},
        opacity=group.opacity,
        hoverinfo="skip",
        name=group.label,
        legendgroup=group.label,
        showlegend=False,
    )


def _legend_traces(groups: list[EdgeGroup], line_scale: float) -> list[go.Scatter]:
    """One legend entry per colour class at a fixed width, in a stable order (real traces are
    ordered by width and would show each class at a different width)."""
    seen: dict[str, EdgeGroup] = {}
    for group in groups:
        if group.legend and group.label not in seen:
            seen[group.label] = group
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="lines",
            line={"color": group.color, "width": 3 * line_scale, "dash": group.dash},
            name=group.label,
            legendgroup=group.label,
            showlegend=True,
            hoverinfo="skip",
        )
        for group in sorted(seen.values(), key=lambda g: LEGEND_ORDER.get(g.label, 99))
    ]


LEGEND_ORDER = {
    label: i
    for i, label in enumerate(
        [S.HELPS_LABEL, S.HURTS_LABEL]
        + [f"into {t}" for t in S.TARGETS]
        + [DOTTED_LABEL]
        + [S.DIFF_LABELS[c] for c in reversed(DIFF_CATEGORIES)]
    )
}


def _edge_hover(layout, scores, edges, ranks, a, category) -> list[str]:
    names = layout.edge_names
    n_all = layout.n_edges
    if a is None:
        return [
            f"{names[e].replace('->', ' → ')}<br>score {scores[e]:+.4g}<br>rank {ranks[e]} of {n_all}"
            for e in edges.tolist()
        ]
    labels = [S.DIFF_LABELS[c] for c in DIFF_CATEGORIES]
    return [
        f"{names[e].replace('->', ' → ')}<br>A {a[e]:+.4g} → B {scores[e]:+.4g}"
        f"<br>{labels[c]}; rank in B {ranks[e]} of {n_all}"
        for e, c in zip(edges.tolist(), category.tolist())
    ]


def _edge_hover_trace(layout: Layout, edges: np.ndarray, hover: list[str]) -> go.Scatter:
    mid = layout.edge_curves[edges, N_CURVE_POINTS // 2]  # [n, 2]
    return go.Scatter(
        x=mid[:, 0],
        y=mid[:, 1],
        mode="markers",
        marker={"size": 8, "color": "rgba(0,0,0,0)"},
        hovertext=hover,
        hoverinfo="text",
        showlegend=False,
        name="edges",
    )


def _boxes(layout: Layout, nodes: np.ndarray, *, height: float = BOX_H, pad: float = 0.0):
    """Closed rectangles of the given nodes joined by NaN gaps (x, y) for a filled trace."""
    x, y = layout.node_x[nodes], layout.node_y[nodes]
    hw, hh = layout.node_w[nodes] / 2 + pad, height / 2 + pad
    xs = np.stack([x - hw, x + hw, x + hw, x - hw, x - hw, np.full_like(x, np.nan)], axis=1)
    ys = np.stack([y - hh, y - hh, y + hh, y + hh, y - hh, np.full_like(y, np.nan)], axis=1)
    return xs.ravel(), ys.ravel()


def active_nodes(layout: Layout, edges: np.ndarray) -> np.ndarray:
    """Boolean ``[n_nodes]``: boxes that some shown edge touches (drawn filled; others white)."""
    active = np.zeros(layout.n_nodes, bool)
    active[layout.edge_src_node[edges]] = True
    active[layout.edge_dst_node[edges]] = True
    return active


def circuit_nodes(layout: Layout, selected_mask: np.ndarray) -> np.ndarray:
    """Boolean ``[n_nodes]``: heads and MLPs that the run's stored circuit touches (and trains)."""
    chosen = np.flatnonzero(np.asarray(selected_mask, dtype=bool))
    kinds = np.asarray(layout.node_kind)
    return active_nodes(layout, chosen) & ((kinds == "head") | (kinds == "mlp"))


def node_fill_groups(layout: Layout, edges: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
    """(node indices, fill colour, name) for each kind of box, idle boxes white."""
    kinds = np.asarray(layout.node_kind)
    active = active_nodes(layout, edges)
    out = []
    for kind, fill, name in (
        ("head", S.HEAD_FILL, "attention head"),
        ("mlp", S.MLP_FILL, "MLP"),
        ("end", S.END_FILL, "input / logits"),
    ):
        is_kind = (kinds == "input") | (kinds == "logits") if kind == "end" else kinds == kind
        for on in (True, False):
            nodes = np.flatnonzero(is_kind & (active == on))
            if len(nodes):
                out.append((nodes, fill if on else S.IDLE_FILL, name))
    return out


def node_label(kind: str, head: int) -> str:
    return {"head": f"h{head}", "mlp": "MLP", "input": "input", "logits": "logits"}[kind]


def _node_traces(layout, edges, selected_mask, focus, scores, style) -> list[go.Scatter]:
    traces = []
    for nodes, fill, name in node_fill_groups(layout, edges):
        x, y = _boxes(layout, nodes)
        traces.append(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                fill="toself",
                fillcolor=fill,
                line={"color": S.NODE_LINE, "width": 1},
                hoverinfo="skip",
                name=name,
                showlegend=False,
            )
        )
    if selected_mask is not None:
        in_circuit = circuit_nodes(layout, selected_mask)
        if in_circuit.any():
            x, y = _boxes(layout, np.flatnonzero(in_circuit))
            traces.append(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    line={"color": S.CIRCUIT_LINE, "width": 2.2 * style.line_scale},
                    hoverinfo="skip",
                    name="trained by the run's circuit",
                    showlegend=True,
                )
            )
    if focus is not None:
        x, y = _boxes(layout, np.array([focus]), pad=0.06)
        traces.append(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={"color": S.HIGHLIGHT_LINE, "width": 3.5 * style.line_scale},
                hoverinfo="skip",
                name="selected",
                showlegend=False,
            )
        )
    traces.append(_label_trace(layout, style))
    return traces


def _label_trace(layout: Layout, style: S.FigureStyle) -> go.Scatter:
    labels = [node_label(k, h) for k, h in zip(layout.node_kind, layout.node_head.tolist())]
    return go.Scatter(
        x=layout.node_x,
        y=layout.node_y,
        mode="text",
        text=labels,
        textfont={"size": style.label_size, "color": "#333333"},
        hoverinfo="skip",
        showlegend=False,
        name="labels",
    )


def _node_hover_trace(layout: Layout, scores: np.ndarray, edges: np.ndarray) -> go.Scatter:
    """Invisible markers over the boxes: hover text, and the points a click selects."""
    n_in = np.bincount(layout.edge_dst_node[edges], minlength=layout.n_nodes)
    n_out = np.bincount(layout.edge_src_node[edges], minlength=layout.n_nodes)
    strength = np.abs(np.nan_to_num(scores[edges]))
    mass = np.bincount(layout.edge_src_node[edges], strength, layout.n_nodes) + np.bincount(
        layout.edge_dst_node[edges], strength, layout.n_nodes
    )
    hover = [
        f"<b>{name}</b><br>edges shown: {i} in, {o} out<br>Σ|score| shown {m:.4g}"
        for name, i, o, m in zip(layout.node_names, n_in.tolist(), n_out.tolist(), mass.tolist())
    ]
    return go.Scatter(
        x=layout.node_x,
        y=layout.node_y,
        mode="markers",
        marker={"size": 22, "color": "rgba(0,0,0,0.003)", "symbol": "square"},
        customdata=list(layout.node_names),
        hovertext=hover,
        hoverinfo="text",
        showlegend=False,
        name="nodes",
    )


def _apply_layout(
    fig: go.Figure, layout: Layout, style: S.FigureStyle, title: str | None, n_legend: int
) -> None:
    rows = layout.n_layers + 2
    # The title sits at the top; the legend rows grow upward from the plot, below the title.
    legend_rows = 1 if n_legend <= 4 else 2 if n_legend <= 8 else 3
    top = (style.title_size * 2 if title else 10) + legend_rows * int(style.font_size * 1.9)
    fig.update_layout(
        height=max(style.min_height, rows * style.px_per_layer + top + 40),
        margin={"l": 70, "r": 20, "t": top, "b": 20},
        plot_bgcolor="white",
        paper_bgcolor="white",
        font={"family": style.font_family, "size": style.font_size, "color": "#222222"},
        title={
            "text": title,
            "font": {"size": style.title_size},
            "yref": "container",
            "y": 0.995,
            "yanchor": "top",
        }
        if title
        else None,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
        hovermode="closest",
        hoverlabel={"font": {"size": style.font_size}},
        dragmode="pan",
        uirevision="circuit",
        clickmode="event+select",
    )
    fig.update_xaxes(
        range=layout.x_range(), visible=False, fixedrange=False, constrain="domain", zeroline=False
    )
    fig.update_yaxes(
        range=layout.y_range(),
        tickmode="array",
        tickvals=list(range(layout.n_layers)),
        ticktext=[f"layer {layer}" for layer in range(layout.n_layers)],
        showgrid=False,
        zeroline=False,
        ticks="",
        tickfont={"size": style.label_size + 1},
    )
