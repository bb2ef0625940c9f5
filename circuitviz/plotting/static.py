"""Circuit figures rendered without a browser (matplotlib): SVG, PDF and PNG, and animated GIFs.

The drawing follows ``circuit.py`` exactly (same layout, same edge choice, same colours), so a file
exported for a paper matches what the dashboard showed. Figures are built with
``matplotlib.figure.Figure`` directly, never through pyplot's global state.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from circuitviz.graph.topology import Graph
from circuitviz.plotting import style as S
from circuitviz.plotting.circuit import (
    LEGEND_ORDER,
    circuit_nodes,
    circuit_view,
    edge_groups,
    node_fill_groups,
    node_label,
)
from circuitviz.plotting.layout import BOX_H, Layout, build_layout

STATIC_FORMATS = ("svg", "pdf", "png")
_DASH = {"solid": "solid", "dot": (0, (1.5, 1.5))}


def circuit_static_figure(
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
    width_in: float | None = None,
) -> Figure:
    """The same picture as ``circuit_figure`` as a matplotlib Figure (arguments as there)."""
    layout = graph if isinstance(graph, Layout) else build_layout(graph)
    style = style or S.FigureStyle()
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
    index = layout.node_index()
    if highlight is not None and highlight not in index:
        raise ValueError(f"highlight {highlight!r} is not a box of this graph")
    focus = None if highlight is None else index[highlight]
    groups = edge_groups(
        layout,
        scores,
        view,
        compare=compare,
        focus=focus,
        color_by=color_by,
        line_scale=style.line_scale,
    )
    edges = view.edges if view.diff is None else view.diff.edges

    width_in = width_in or 11.0 * max(1.0, 0.85 * style.label_size / 10)
    handles = _legend_handles(groups, selected_mask is not None)
    n_rows = -(-len(handles) // _LEGEND_COLUMNS)
    # Vertical budget in inches: title, legend rows, then the graph.
    head_in = (
        0.45 if title else 0.1
    ) * style.title_size / 16 + 0.3 * n_rows * style.label_size / 10
    graph_in = max(3.5, (layout.n_layers + 2) * style.px_per_layer / 100)
    height_in = head_in + graph_in + 0.15
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.15 / height_in, 0.92, graph_in / height_in))
    for group in groups:
        lines = LineCollection(
            layout.edge_curves[group.edges],
            colors=group.color,
            linewidths=group.width * 0.75,  # plotly widths are px, matplotlib's are points
            alpha=group.opacity,
            linestyles=_DASH[group.dash],
            zorder=1,
        )
        ax.add_collection(lines)
    _draw_nodes(ax, layout, edges, selected_mask, focus, style)
    ax.set_xlim(*layout.x_range())
    ax.set_ylim(*layout.y_range())
    ax.set_yticks(range(layout.n_layers), [f"layer {layer}" for layer in range(layout.n_layers)])
    ax.tick_params(axis="y", length=0, labelsize=style.label_size + 1)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    top = 1 - 0.08 / height_in
    if title:
        fig.text(0.07, top, title, ha="left", va="top", fontsize=style.title_size)
        top -= 0.45 * style.title_size / 16 / height_in
    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0.065, top),
            ncol=_LEGEND_COLUMNS,
            fontsize=style.label_size,
            frameon=False,
            borderaxespad=0,
        )
    return fig


def _draw_nodes(ax, layout, edges, selected_mask, focus, style) -> None:
    in_circuit = (
        circuit_nodes(layout, selected_mask)
        if selected_mask is not None
        else np.zeros(layout.n_nodes, bool)
    )
    for nodes, fill, _ in node_fill_groups(layout, edges):
        for node in nodes.tolist():
            strong = bool(in_circuit[node])
            ax.add_patch(
                Rectangle(
                    (
                        layout.node_x[node] - layout.node_w[node] / 2,
                        layout.node_y[node] - BOX_H / 2,
                    ),
                    layout.node_w[node],
                    BOX_H,
                    facecolor=fill,
                    edgecolor=S.CIRCUIT_LINE if strong else S.NODE_LINE,
                    linewidth=(1.6 if strong else 0.7) * style.line_scale,
                    zorder=2,
                )
            )
            ax.text(
                layout.node_x[node],
                layout.node_y[node],
                node_label(layout.node_kind[node], int(layout.node_head[node])),
                ha="center",
                va="center",
                fontsize=style.label_size * 0.8,
                color="#333333",
                zorder=3,
            )
    if focus is not None:
        pad = 0.06
        ax.add_patch(
            Rectangle(
                (
                    layout.node_x[focus] - layout.node_w[focus] / 2 - pad,
                    layout.node_y[focus] - BOX_H / 2 - pad,
                ),
                layout.node_w[focus] + 2 * pad,
                BOX_H + 2 * pad,
                facecolor="none",
                edgecolor=S.HIGHLIGHT_LINE,
                linewidth=2.5 * style.line_scale,
                zorder=4,
            )
        )


_LEGEND_COLUMNS = 4


def _legend_handles(groups, with_circuit: bool) -> list:
    seen: dict[str, object] = {}
    for group in groups:
        if group.legend and group.label not in seen:
            seen[group.label] = group
    ordered = sorted(seen.values(), key=lambda g: LEGEND_ORDER.get(g.label, 99))
    handles = [
        Line2D([], [], color=g.color, linewidth=2.5, linestyle=_DASH[g.dash], label=g.label)
        for g in ordered
    ]
    if with_circuit:
        handles.append(
            Rectangle(
                (0, 0),
                1,
                1,
                facecolor="white",
                edgecolor=S.CIRCUIT_LINE,
                linewidth=1.6,
                label="trained by the run's circuit",
            )
        )
    return handles


def save_static(fig: Figure, path: str | Path, *, fmt: str | None = None, dpi: int = 150) -> Path:
    """Write ``fig`` as SVG, PDF or PNG (``fmt`` defaults to the file's extension)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in STATIC_FORMATS:
        raise ValueError(f"format must be one of {STATIC_FORMATS}, got {fmt!r} (from {path.name})")
    fig.savefig(path, format=fmt, dpi=dpi)
    return path


def static_bytes(fig: Figure, fmt: str, *, dpi: int = 150) -> bytes:
    """``fig`` as SVG, PDF or PNG bytes (for a download button)."""
    if fmt not in STATIC_FORMATS:
        raise ValueError(f"format must be one of {STATIC_FORMATS}, got {fmt!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()


def gif_bytes(frames: Iterable[Figure], *, seconds_per_frame: float = 0.8, dpi: int = 80) -> bytes:
    """An animated GIF, one frame per figure, looping forever (Pillow comes with matplotlib)."""
    from PIL import Image

    if seconds_per_frame <= 0:
        raise ValueError(f"seconds_per_frame must be positive, got {seconds_per_frame!r}")
    images = []
    for fig in frames:
        fig.set_dpi(dpi)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE))
    if not images:
        raise ValueError("a GIF needs at least one frame")
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(seconds_per_frame * 1000),
        loop=0,
    )
    return buffer.getvalue()
