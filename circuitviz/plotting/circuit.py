"""A circuit scene (``scene.build_scene``) as a plotly figure: for notebooks, HTML and the API.

The dashboard draws scenes in the browser itself (``web/circuit.js``); this renderer draws the same
scene with plotly. Edges are batched into one scatter trace per edge group (curves joined by NaN
gaps), never one trace per edge; boxes into one filled trace per fill colour. Hover text lives on
one invisible marker per edge at the curve's midpoint and one per box.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from circuitviz.plotting import style as S
from circuitviz.plotting.layout import N_CURVE_POINTS
from circuitviz.plotting.scene import Scene, edge_hover, node_label

BOX_OUTLINES = ("trained by the run's circuit", "selected")


def circuit_figure(
    scene: Scene, *, title: str | None = None, style: S.FigureStyle | None = None
) -> go.Figure:
    """The picture of ``scene``: edges under boxes, a legend above the plot, hover on both."""
    style = style or S.FigureStyle()
    traces = [_edge_trace(scene, group) for group in scene.groups]
    traces += _box_traces(scene, style)
    traces.append(_edge_hover_trace(scene))
    traces.append(_node_hover_trace(scene))
    traces += _legend_traces(scene, style)
    fig = go.Figure(data=traces)
    _apply_layout(fig, scene, style, title)
    return fig


def _joined(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of curves ``[n, points, 2]`` joined by NaN gaps: ``[n * (points + 1)]``."""
    gap = np.full((len(curves), 1, 2), np.nan)
    joined = np.concatenate([curves, gap], axis=1).reshape(-1, 2)
    return joined[:, 0], joined[:, 1]


def _edge_trace(scene: Scene, group) -> go.Scatter:
    x, y = _joined(scene.curves(group.edges))
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


def _rectangles(scene: Scene, nodes: np.ndarray, pad: float = 0.0):
    """Closed rectangles of ``nodes`` joined by NaN gaps (x, y) for one filled trace."""
    x, y, w, h = (values[nodes] for values in scene.boxes())
    hw, hh = w / 2 + pad, h / 2 + pad
    xs = np.stack([x - hw, x + hw, x + hw, x - hw, x - hw, np.full_like(x, np.nan)], axis=1)
    ys = np.stack([y - hh, y - hh, y + hh, y + hh, y - hh, np.full_like(y, np.nan)], axis=1)
    return xs.ravel(), ys.ravel()


def _box_traces(scene: Scene, style: S.FigureStyle) -> list[go.Scatter]:
    fills = np.asarray(scene.node_fill)
    traces = []
    for fill in dict.fromkeys(scene.node_fill):
        x, y = _rectangles(scene, np.flatnonzero(fills == fill))
        traces.append(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                fill="toself",
                fillcolor=fill,
                line={"color": S.NODE_LINE, "width": 1},
                hoverinfo="skip",
                name="boxes",
                showlegend=False,
            )
        )
    if scene.in_circuit is not None and scene.in_circuit.any():
        x, y = _rectangles(scene, np.flatnonzero(scene.in_circuit))
        traces.append(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={"color": S.CIRCUIT_LINE, "width": 2.2 * style.line_scale},
                hoverinfo="skip",
                name=BOX_OUTLINES[0],
                showlegend=True,  # its own legend entry
            )
        )
    if scene.focus is not None:
        x, y = _rectangles(scene, np.array([scene.focus]), pad=0.06)
        traces.append(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={"color": S.HIGHLIGHT_LINE, "width": 3.5 * style.line_scale},
                hoverinfo="skip",
                name=BOX_OUTLINES[1],
                showlegend=False,
            )
        )
    layout = scene.layout
    x, y, _, h = scene.boxes()
    big = h > 0.1  # key/value bars and collapsed layers carry no label
    labels = [node_label(k, hd) for k, hd in zip(layout.node_kind, layout.node_head.tolist())]
    traces.append(
        go.Scatter(
            x=x[big],
            y=y[big],
            mode="text",
            text=[label for label, on in zip(labels, big.tolist()) if on],
            textfont={
                "size": style.label_size,
                "color": [c for c, on in zip(scene.label_colors, big.tolist()) if on],
            },
            hoverinfo="skip",
            showlegend=False,
            name="labels",
        )
    )
    return traces


def _edge_hover_trace(scene: Scene) -> go.Scatter:
    curves = scene.curves(scene.edges)
    half = N_CURVE_POINTS // 2
    mid = (curves[:, half - 1] + curves[:, half]) / 2  # [n, 2]: the middle of every route
    return go.Scatter(
        x=mid[:, 0],
        y=mid[:, 1],
        mode="markers",
        marker={"size": 8, "color": "rgba(0,0,0,0)"},
        hovertext=edge_hover(scene),
        hoverinfo="text",
        showlegend=False,
        name="edges",
    )


def _node_hover_trace(scene: Scene) -> go.Scatter:
    """Invisible markers over the boxes: hover text, and the points a click selects."""
    layout = scene.layout
    edges = scene.edges
    n_in = np.bincount(layout.edge_dst_node[edges], minlength=layout.n_nodes)
    n_out = np.bincount(layout.edge_src_node[edges], minlength=layout.n_nodes)
    hover = [
        f"<b>{name}</b><br>edges shown: {i} in, {o} out<br>Σ|score| shown {m:.4g}"
        for name, i, o, m in zip(
            layout.node_names, n_in.tolist(), n_out.tolist(), scene.node_mass.tolist()
        )
    ]
    if scene.node_value is not None:  # boxes coloured by an analysis: say its value
        mode = scene.node_value_mode
        name = "DLA" if mode == "dla" else f"{S.ROLE_LABELS[mode]} score"
        hover = [
            text + (f"<br>{name} {v:+.4g} at step {scene.node_value_step}" if v == v else "")
            for text, v in zip(hover, scene.node_value.tolist())
        ]
    x, y, _, _ = scene.boxes()
    return go.Scatter(
        x=x,
        y=y,
        mode="markers",
        marker={"size": 18, "color": "rgba(0,0,0,0.003)", "symbol": "square"},
        customdata=list(layout.node_names),
        hovertext=hover,
        hoverinfo="text",
        showlegend=False,
        name="nodes",
    )


def _legend_traces(scene: Scene, style: S.FigureStyle) -> list[go.Scatter]:
    """One legend entry per colour class, at a fixed width (the circuit's box outline is its own
    entry)."""
    traces = []
    for entry in scene.legend:
        if entry.kind == "fill":  # a box colouring's swatch
            traces.append(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    marker={
                        "symbol": "square",
                        "size": 12,
                        "color": entry.color,
                        "line": {"color": S.NODE_LINE, "width": 1},
                    },
                    name=entry.label,
                    showlegend=True,
                    hoverinfo="skip",
                )
            )
        if entry.kind != "line":
            continue
        line = {"color": entry.color, "width": 3 * style.line_scale, "dash": entry.dash}
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line=line,
                name=entry.label,
                legendgroup=entry.label,
                showlegend=True,
                hoverinfo="skip",
            )
        )
    return traces


def _apply_layout(fig: go.Figure, scene: Scene, style: S.FigureStyle, title: str | None) -> None:
    low, high = scene.y_range()
    n_legend = len(scene.legend)
    # The title sits at the top; the legend rows grow upward from the plot, below the title.
    legend_rows = 1 if n_legend <= 4 else 2 if n_legend <= 8 else 3
    top = (style.title_size * 2 if title else 10) + legend_rows * int(style.font_size * 1.9)
    fig.update_layout(
        height=max(style.min_height, int((high - low) * style.px_per_layer) + top + 40),
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
        range=scene.layout.x_range(), visible=False, constrain="domain", zeroline=False
    )
    ticks, labels = scene.layer_ticks()
    fig.update_yaxes(
        range=[low, high],
        tickmode="array",
        tickvals=ticks,
        ticktext=labels,
        showgrid=False,
        zeroline=False,
        ticks="",
        tickfont={"size": style.label_size + 1},
    )
