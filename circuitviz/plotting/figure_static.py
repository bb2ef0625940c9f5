"""A plotly figure of this package redrawn with matplotlib, for SVG, PDF and PNG without a browser.

plotly writes static images only through kaleido and a headless Chrome; the line, heatmap and
histogram figures of the Mechanisms, Dynamics and Heads pages are simple enough to redraw. Steps:

1. one matplotlib axes per plotly subplot, traces or not, placed at the subplot's domain
   (``xaxis2``, ``yaxis2`` ...), with its axis titles and ranges (a heatmap's reversed y axis too);
2. each trace on its axes: ``Scatter`` (lines with their colour, width, dash and opacity; markers,
   a marker colour scale; point labels), ``Heatmap`` (its colour scale and limits, category labels,
   NaN left blank, a colour bar with plotly's tick labels when plotly shows one), ``Histogram``
   (its bins and opacity);
3. vertical line shapes (a step cursor), the title, the subplot titles and notes (paper and
   axis-domain annotations), and one legend for every panel's named traces (with their group
   titles) to the right of the plot, when plotly would show one.

Traces without a colour take the template's colour cycle, as plotly does. Another trace type is
refused with a ValueError naming it. Hover text, interactivity and plotly's finer layout (legend
positions, shared-axis ranges, text positions) are not reproduced: the data and their encodings
are.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from circuitviz.plotting import style as S

DASHES = {None: "-", "solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--"}
DEFAULT_WIDTH_IN = 10.0
MARGIN_IN = {"l": 0.85, "r": 0.3, "t": 0.75, "b": 0.6}
COLORBAR_IN = 1.1  # the right margin when a colour bar sits in it
LEGEND_ROW_IN = 0.19  # height of one legend row


def static_figure(fig, *, style: S.FigureStyle | None = None, width_in: float | None = None):
    """``fig`` (a plotly Figure) as a matplotlib Figure of the same layout and data."""
    style = style or S.FigureStyle()
    layout = fig.layout
    for trace in fig.data:
        if trace.type not in ("scatter", "heatmap", "histogram"):
            raise ValueError(f"cannot draw a plotly {trace.type!r} trace without a browser")
    width_in = width_in or DEFAULT_WIDTH_IN
    height_in = (layout.height or 450) / 100
    entries = _legend_entries(fig)
    margins = _margins(fig, entries, height_in)
    height_in += margins["b"] - MARGIN_IN["b"]  # slanted labels take room, not the plot
    width_in += margins["r"] - MARGIN_IN["r"]  # and so do a colour bar and a legend
    out = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(out)
    colorway = list(layout.template.layout.colorway or ()) if layout.template else []
    colorway = colorway or list(S.RUN_COLORS)
    axes = {
        key: _axes(out, layout, key, width_in, height_in, style, margins) for key in _subplots(fig)
    }
    for index, trace in enumerate(fig.data):
        default = colorway[index % len(colorway)]  # plotly colours a trace by its position
        ax = axes[(trace.xaxis or "x", trace.yaxis or "y")]
        if trace.type == "scatter":
            _scatter(ax, trace, default)
        elif trace.type == "heatmap":
            _heatmap(out, ax, trace, layout, width_in)
        else:
            _histogram(ax, trace, default)
    _shapes(layout, axes)
    noted = _texts(out, layout, axes, width_in, height_in, margins, style)
    for key, ax in axes.items():
        if not ax.has_data() and key not in noted:  # a grid cell plotly leaves empty
            ax.set_axis_off()
    if entries:
        _legend(out, axes, entries, width_in, height_in, margins, style)
    return out


def _subplots(fig) -> list[tuple[str, str]]:
    """(x axis, y axis) of every subplot: each x axis with its anchor, and any pair a trace uses."""
    keys = []
    for name in fig.layout.to_plotly_json():
        if name.startswith("xaxis"):
            ref = "x" + name[5:]
            keys.append((ref, fig.layout[name].anchor or "y" + name[5:]))
    for trace in fig.data:
        keys.append((trace.xaxis or "x", trace.yaxis or "y"))
    return list(dict.fromkeys(keys))


def _legend_entries(fig) -> list[tuple[str, str | None]]:
    """(label, group title) of each legend entry plotly would show: named traces not hidden
    from the legend, once per name; none when a single trace would be alone in it."""
    if fig.layout.showlegend is False:
        return []
    seen, entries = set(), []
    for trace in fig.data:
        if not trace.name or trace.showlegend is False or trace.type == "heatmap":
            continue
        if trace.name in seen:
            continue
        seen.add(trace.name)
        group = trace.legendgrouptitle.text if trace.legendgrouptitle else None
        entries.append((trace.name, group))
    if len(entries) < 2 and fig.layout.showlegend is not True:
        return []
    return entries


def _legend_rows(entries: list, height_in: float) -> tuple[int, int]:
    """(rows per column, columns) of the legend (group titles take a row each)."""
    groups = {group for _, group in entries if group}
    n = len(entries) + len(groups)
    rows = max(4, int((height_in - MARGIN_IN["t"] - MARGIN_IN["b"]) / LEGEND_ROW_IN))
    return rows, math.ceil(n / rows)


def _shapes(layout, axes: dict) -> None:
    for shape in layout.shapes or ():  # vertical lines: a step cursor (``add_vline``)
        if shape.type == "line" and shape.x0 is not None and shape.x0 == shape.x1:
            yref = (shape.yref or "y").replace(" domain", "")
            ax = axes.get((shape.xref or "x", yref))
            if ax is not None:
                line = shape.line
                ax.axvline(
                    float(shape.x0),
                    color=line.color if line and line.color else "#444444",
                    linestyle=DASHES.get(line.dash if line else None, "-"),
                    linewidth=1.2,
                    zorder=1,
                )


def _texts(out, layout, axes, width_in, height_in, margins, style) -> set:
    """The title, the subplot titles (paper annotations) and a panel's notes (its domain's);
    returns the panels that got a note."""
    noted = set()
    title = layout.title.text if layout.title else None
    if title:
        out.text(
            margins["l"] / width_in,
            1 - 0.12 / height_in,
            title,
            ha="left",
            va="top",
            fontsize=style.title_size * 0.85,
        )
    for note in layout.annotations or ():
        if not note.text:
            continue
        if note.xref == "paper" and note.yref == "paper":
            x0, y0 = _inner(note.x, note.y, width_in, height_in, margins)
            out.text(
                x0,
                y0 + 0.05 / height_in,
                note.text,
                ha="center",
                va="bottom",
                fontsize=style.font_size * 0.8,
            )
        elif str(note.xref).endswith(" domain") and str(note.yref).endswith(" domain"):
            key = (note.xref.split()[0], note.yref.split()[0])
            ax = axes.get(key)
            if ax is not None:
                noted.add(key)
                ax.text(
                    note.x,
                    note.y,
                    note.text,
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    fontsize=style.label_size,
                    color="#555555",
                )
    return noted


def _legend(out, axes, entries, width_in, height_in, margins, style) -> None:
    """One legend for every panel, in the right margin, group titles as bold rows."""
    handles, labels = [], []
    shown_groups = set()
    by_label = {}
    for ax in axes.values():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    for label, group in entries:
        if group and group not in shown_groups:
            shown_groups.add(group)
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(group)
        handles.append(by_label.get(label, Line2D([], [], color="#888888")))
        labels.append(label)
    rows, columns = _legend_rows(entries, height_in)
    legend = out.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1 - (margins["r"] - 0.15) / width_in, 1 - margins["t"] / height_in),
        ncol=columns,
        fontsize=style.label_size * 0.85,
        frameon=False,
        borderaxespad=0,
    )
    for text in legend.get_texts():
        if text.get_text() in shown_groups:
            text.set_fontweight("bold")


def _margins(fig, entries: list, height_in: float) -> dict:
    """Inches around the plot area: wider on the right for a colour bar or the legend, taller at
    the bottom for a heatmap's slanted token labels."""
    margins = dict(MARGIN_IN)
    for trace in fig.data:
        if trace.type != "heatmap":
            continue
        if trace.showscale is not False:
            margins["r"] = COLORBAR_IN
        if trace.x is not None and any(len(str(label)) > 3 for label in trace.x):
            longest = max(len(str(label)) for label in trace.x)
            margins["b"] = max(margins["b"], 0.6 + 0.075 * longest)
    if entries:
        longest = max(len(str(label)) for label, _ in entries)
        _, columns = _legend_rows(entries, height_in)
        margins["r"] = max(margins["r"], 0.3 + columns * (0.55 + 0.068 * longest))
    return margins


def _inner(x: float, y: float, width_in: float, height_in: float, margins: dict) -> tuple:
    """Plotly paper coordinates (the plot area inside ``margins``, inches) to figure fractions."""
    left, bottom = margins["l"] / width_in, margins["b"] / height_in
    w = 1 - (margins["l"] + margins["r"]) / width_in
    h = 1 - (margins["t"] + margins["b"]) / height_in
    return left + x * w, bottom + y * h


def _axis_name(ref: str, letter: str) -> str:
    return f"{letter}axis" + ref[1:]  # "x2" -> "xaxis2"


def _axes(out, layout, key, width_in, height_in, style, margins):
    xaxis, yaxis = layout[_axis_name(key[0], "x")], layout[_axis_name(key[1], "y")]
    x0, x1 = xaxis.domain or (0, 1)
    y0, y1 = yaxis.domain or (0, 1)
    left, bottom = _inner(x0, y0, width_in, height_in, margins)
    right, top = _inner(x1, y1, width_in, height_in, margins)
    pad = 0.25 / width_in if x0 > 0 else 0.0  # room for the neighbour's colour bar or labels
    ax = out.add_axes((left + pad, bottom, right - left - pad, top - bottom))
    ax.tick_params(labelsize=style.label_size)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    if xaxis.title and xaxis.title.text:
        ax.set_xlabel(xaxis.title.text, fontsize=style.label_size + 1)
    if yaxis.title and yaxis.title.text:
        ax.set_ylabel(yaxis.title.text, fontsize=style.label_size + 1)
    if xaxis.range is not None:
        ax.set_xlim(*xaxis.range)
    if yaxis.range is not None:
        ax.set_ylim(*yaxis.range)
    return ax


def _values(array) -> np.ndarray | None:
    return None if array is None else np.asarray(array)


def _scatter(ax, trace, default_color: str) -> None:
    mode = trace.mode or "lines+markers"
    x, y = _values(trace.x), np.asarray(trace.y, dtype=float)
    x = np.arange(len(y)) if x is None else x
    line_color = trace.line.color if trace.line and trace.line.color else None
    marker = trace.marker
    marker_color = marker.color if marker is not None else None
    color = line_color or (marker_color if isinstance(marker_color, str) else default_color)
    label = trace.name if trace.showlegend is not False and trace.name else "_nolegend_"
    alpha = trace.opacity if trace.opacity is not None else 1.0
    if "lines" in mode:
        dash = DASHES.get(trace.line.dash if trace.line else None, "-")
        width = trace.line.width * 0.75 if trace.line and trace.line.width else 1.8
        ax.plot(
            x, y, linestyle=dash, color=color, linewidth=width, alpha=alpha, label=label, zorder=2
        )
        label = "_nolegend_"
    if "markers" in mode:
        size = (marker.size if marker is not None and marker.size else 6) ** 2 * 0.6
        if marker_color is not None and not isinstance(marker_color, str):
            cmap = _colormap(marker.colorscale)
            ax.scatter(
                x, y, c=np.asarray(marker_color, float), cmap=cmap, s=size, zorder=3, label=label
            )
        else:
            mc = marker_color if isinstance(marker_color, str) else color
            ax.scatter(x, y, color=mc, s=size, zorder=3, label=label)
    if "text" in mode and trace.text is not None:
        for xi, yi, text in zip(x, y, trace.text):
            ax.annotate(
                str(text),
                (xi, yi),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
                color="#444444",
            )


def _colormap(colorscale) -> LinearSegmentedColormap:
    """A plotly colour scale (``((position, colour), ...)``) as a matplotlib colour map."""
    if colorscale is None:
        from plotly.colors import get_colorscale

        colorscale = get_colorscale("Viridis")
    stops = [(float(pos), _rgba(color)) for pos, color in colorscale]
    return LinearSegmentedColormap.from_list("plotly", stops)


def _rgba(color: str) -> tuple[float, ...]:
    """A plotly colour string (``#rrggbb``, ``rgb(r, g, b)``, ``rgba(...)``, a name) as RGBA."""
    text = color.strip()
    if text.startswith("rgb"):
        parts = [float(p) for p in text[text.index("(") + 1 : text.index(")")].split(",")]
        alpha = parts[3] if len(parts) > 3 else 1.0
        return (parts[0] / 255, parts[1] / 255, parts[2] / 255, alpha)
    return to_rgba(text)


def _heatmap(out, ax, trace, layout, width_in) -> None:
    z = np.array(trace.z, dtype=float)
    n_rows, n_cols = z.shape
    reversed_y = layout[_axis_name(trace.yaxis or "y", "y")].autorange == "reversed"
    low = trace.zmin if trace.zmin is not None else np.nanmin(z)
    high = trace.zmax if trace.zmax is not None else np.nanmax(z)
    image = ax.imshow(
        np.ma.masked_invalid(z),
        cmap=_colormap(trace.colorscale),
        vmin=low,
        vmax=high,
        origin="upper" if reversed_y else "lower",
        aspect="auto",
        interpolation="nearest",
    )
    for labels, setter, n in ((trace.x, ax.set_xticks, n_cols), (trace.y, ax.set_yticks, n_rows)):
        if labels is not None and len(labels) == n:
            setter(range(n), [str(label) for label in labels], rotation=0)
        else:
            step = max(1, n // 12)
            setter(range(0, n, step))
    if trace.x is not None and any(len(str(label)) > 3 for label in trace.x):
        for tick in ax.get_xticklabels():
            tick.set_rotation(60)
            tick.set_ha("right")
    if trace.showscale is not False:
        box = ax.get_position()  # the bar in the right margin, beside its heatmap
        cax = out.add_axes((box.x1 + 0.12 / width_in, box.y0, 0.14 / width_in, box.height))
        bar = out.colorbar(image, cax=cax)
        colorbar = trace.colorbar
        if colorbar and colorbar.tickvals is not None:  # e.g. log10 counts labelled 1, 10, 100
            labels = colorbar.ticktext or [f"{v:g}" for v in colorbar.tickvals]
            ticks = [v for v in colorbar.tickvals if low <= v <= high]
            bar.set_ticks(ticks, labels=[labels[list(colorbar.tickvals).index(v)] for v in ticks])
        title = colorbar.title.text if colorbar and colorbar.title else None
        if title:
            bar.set_label(title)


def _histogram(ax, trace, color: str) -> None:
    x = np.asarray(trace.x, dtype=float)
    bins = "auto"
    if trace.xbins is not None and trace.xbins.size:
        start, end, size = float(trace.xbins.start), float(trace.xbins.end), float(trace.xbins.size)
        bins = np.arange(start, end + size / 2, size)
    ax.hist(
        x,
        bins=bins,
        alpha=trace.opacity if trace.opacity is not None else 1.0,
        color=trace.marker.color if trace.marker and trace.marker.color else color,
        label=trace.name or "_nolegend_",
    )
