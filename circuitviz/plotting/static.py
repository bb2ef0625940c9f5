"""Circuit scenes rendered without a browser (matplotlib): SVG, PDF and PNG, and animated GIFs.

It draws the same ``Scene`` as the plotly and browser renderers (same layout, same edges, same
colours), so a file exported for a paper matches what the dashboard showed. Figures are built with
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

from circuitviz.plotting import style as S
from circuitviz.plotting.scene import Scene, node_label

STATIC_FORMATS = ("svg", "pdf", "png")
_DASH = {"solid": "solid", "dot": (0, (1.5, 1.5))}
_LEGEND_COLUMNS = 4  # at most


def _legend_columns(scene: Scene, width_in: float, style: S.FigureStyle) -> int:
    """As many legend columns (up to four) as the longest label lets fit across the figure."""
    longest = max((len(entry.label) for entry in scene.legend), default=0)
    per_column = 0.6 + 0.075 * longest * style.label_size / 10  # inches
    return max(1, min(_LEGEND_COLUMNS, int((width_in - 1.0) / per_column)))


def circuit_static_figure(
    scene: Scene,
    *,
    title: str | None = None,
    style: S.FigureStyle | None = None,
    width_in: float | None = None,
) -> Figure:
    """The same picture of ``scene`` as ``circuit.circuit_figure``, as a matplotlib Figure."""
    style = style or S.FigureStyle()
    layout = scene.layout
    width_in = width_in or 11.0 * max(1.0, 0.85 * style.label_size / 10)
    handles = _legend_handles(scene)
    columns = _legend_columns(scene, width_in, style)
    n_rows = -(-len(handles) // columns)
    low, high = scene.y_range()
    # Vertical budget in inches: title, legend rows, then the graph.
    head_in = (
        0.45 if title else 0.1
    ) * style.title_size / 16 + 0.3 * n_rows * style.label_size / 10
    graph_in = max(3.5, (high - low) * style.px_per_layer / 100)
    height_in = head_in + graph_in + 0.15
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.15 / height_in, 0.92, graph_in / height_in))
    for group in scene.groups:
        if not len(group.edges):
            continue
        ax.add_collection(
            LineCollection(
                scene.curves(group.edges),
                colors=group.color,
                linewidths=group.width * 0.75,  # plotly widths are px, matplotlib's are points
                alpha=group.opacity,
                linestyles=_DASH[group.dash],
                zorder=1,
            )
        )
    _draw_boxes(ax, scene, style)
    ax.set_xlim(*layout.x_range())
    ax.set_ylim(low, high)
    ticks, labels = scene.layer_ticks()
    ax.set_yticks(ticks, labels)
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
            ncol=columns,
            fontsize=style.label_size,
            frameon=False,
            borderaxespad=0,
        )
    return fig


def _draw_boxes(ax, scene: Scene, style: S.FigureStyle) -> None:
    layout = scene.layout
    xs, ys, ws, hs = scene.boxes()
    in_circuit = (
        scene.in_circuit if scene.in_circuit is not None else np.zeros(layout.n_nodes, bool)
    )
    for node in range(layout.n_nodes):
        strong = bool(in_circuit[node])
        ax.add_patch(
            Rectangle(
                (xs[node] - ws[node] / 2, ys[node] - hs[node] / 2),
                ws[node],
                hs[node],
                facecolor=scene.node_fill[node],
                edgecolor=S.CIRCUIT_LINE if strong else S.NODE_LINE,
                linewidth=(1.6 if strong else 0.7) * style.line_scale,
                zorder=2,
            )
        )
        if hs[node] > 0.1:  # key/value bars and collapsed layers carry no label
            ax.text(
                xs[node],
                ys[node],
                node_label(layout.node_kind[node], int(layout.node_head[node])),
                ha="center",
                va="center",
                fontsize=style.label_size * 0.8,
                color=scene.label_colors[node],
                zorder=3,
            )
    if scene.focus is not None:
        pad, f = 0.06, scene.focus
        ax.add_patch(
            Rectangle(
                (xs[f] - ws[f] / 2 - pad, ys[f] - hs[f] / 2 - pad),
                ws[f] + 2 * pad,
                hs[f] + 2 * pad,
                facecolor="none",
                edgecolor=S.HIGHLIGHT_LINE,
                linewidth=2.5 * style.line_scale,
                zorder=4,
            )
        )


def _legend_handles(scene: Scene) -> list:
    handles = []
    for entry in scene.legend:
        if entry.kind == "fill":
            handles.append(
                Rectangle(
                    (0, 0),
                    1,
                    1,
                    facecolor=entry.color,
                    edgecolor=S.NODE_LINE,
                    linewidth=0.8,
                    label=entry.label,
                )
            )
        elif entry.kind == "box":
            handles.append(
                Rectangle(
                    (0, 0),
                    1,
                    1,
                    facecolor="white",
                    edgecolor=entry.color,
                    linewidth=1.6,
                    label=entry.label,
                )
            )
        else:
            handles.append(
                Line2D(
                    [],
                    [],
                    color=entry.color,
                    linewidth=2.5,
                    linestyle=_DASH[entry.dash],
                    label=entry.label,
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
