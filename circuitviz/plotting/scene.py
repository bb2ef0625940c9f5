"""The scene of a circuit view: which edges and boxes to draw, and how, for any renderer.

``build_scene`` decides everything a picture of one step (or of the change between two steps) shows;
the plotly renderer (``circuit``), the matplotlib renderer (``static``) and the browser's own renderer
(``web/circuit.js``, which recomputes scenes as the step slider moves and is tested against this
module) only draw it. Steps:

1. Shown edges: ``|score| >= threshold`` (non-zero, finite), optionally only the run's own circuit,
   then the ``top_n`` strongest (``edges.select_edges``). Comparing two steps shows the union of
   both steps' edges, each classified (``edges.diff_edges``).
2. Focus: with a box highlighted, its edges stay coloured and the rest fade; in focus mode only the
   edges on some shown path through the box remain, across the whole depth.
3. Edge styles: colour by sign (or by reader, dotted when the score is positive; or by diff
   category), width and opacity by |score| relative to the strongest shown edge (four bins on a
   square-root scale), all thinner when many edges are shown. Groups are ordered weakest first so strong edges end on top.
4. Boxes: filled in their kind's colour, paler the less attribution flows through them at this step
   (Σ|score| of their shown edges); idle boxes white; boxes the run's circuit trains outlined. Or
   filled by an analysis (``NodeValues``: DLA, a role's score) at the latest analysed step at or
   before this one, whiter the smaller its value.
5. Layers that no shown edge touches may collapse to a thin band (``collapse``), so a sparse circuit
   in a 30-layer model uses the height for the layers that matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from circuitviz.plotting import style as S
from circuitviz.plotting.boxcolors import (
    FILL_LEVELS,
    NodeValues,
    label_color,
    mix_white,
    value_fills,
)
from circuitviz.plotting.edges import (
    DIFF_CATEGORIES,
    EdgeDiff,
    diff_edges,
    edge_ranks,
    rank_order,
    select_edges,
)
from circuitviz.plotting.layout import TARGET_CODES, Layout

WIDTH_BINS = (0.15, 0.35, 0.65)  # sqrt(|score| / max |score| shown): scores are heavy-tailed
WIDTHS = (0.8, 1.6, 2.8, 4.5)
OPACITIES = (0.45, 0.6, 0.75, 0.9)
FADED_WIDTH, FADED_OPACITY, FADED_LABEL = 0.7, 0.5, "other edges"
DOTTED_LABEL = "dotted: score > 0"
CIRCUIT_LABEL = "trained by the run's circuit"
COLLAPSED_BAND = 0.22  # height (in layers) of a collapsed layer's band
MIN_FILL = 0.25  # fill strength of the least important active box (1 = the kind's full colour)

KIND_FILL = {
    "input": S.END_FILL,
    "logits": S.END_FILL,
    "head": S.HEAD_FILL,
    "kv": S.KV_FILL,
    "mlp": S.MLP_FILL,
}


@dataclass(frozen=True, kw_only=True)
class SceneOptions:
    """What a view shows. ``top_n=None`` shows every edge above ``threshold``; ``highlight`` is a
    box name (``a3.h1``, ``m2``, ``a3.kv0``, ``input``, ``logits``); ``focus`` keeps only the edges
    on paths through it; ``collapse`` shrinks layers no shown edge touches; ``noise_k`` greys
    changes smaller than ``noise_k`` times the per-edge noise floor when comparing."""

    threshold: float = 0.0
    top_n: int | None = None
    only_selected: bool = False
    color_by: S.ColorBy = "sign"
    highlight: str | None = None
    focus: bool = False
    collapse: bool = False
    noise_k: float = 2.0
    line_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.threshold >= 0:  # also rejects NaN
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")
        if self.top_n is not None and self.top_n < 0:
            raise ValueError(f"top_n must be >= 0 or None, got {self.top_n!r}")
        if self.color_by not in ("sign", "target"):
            raise ValueError(f"color_by must be 'sign' or 'target', got {self.color_by!r}")
        if not self.noise_k > 0:
            raise ValueError(f"noise_k must be positive, got {self.noise_k!r}")
        if not self.line_scale > 0:
            raise ValueError(f"line_scale must be positive, got {self.line_scale!r}")


@dataclass(frozen=True, eq=False)
class EdgeGroup:
    """Edges drawn alike: one plotly trace, one matplotlib LineCollection, one canvas path."""

    edges: np.ndarray
    color: str
    width: float
    opacity: float
    label: str
    dash: Literal["solid", "dot"] = "solid"
    legend: bool = False


@dataclass(frozen=True)
class LegendEntry:
    label: str
    color: str
    dash: Literal["solid", "dot"] = "solid"
    kind: Literal["line", "box", "fill"] = "line"  # box: an outline; fill: a filled swatch


@dataclass(frozen=True, kw_only=True, eq=False)
class Scene:
    """Everything to draw. ``edges``: the edges drawn (strongest first; the union of both steps
    when comparing), ``ranks``: rank of every edge by |score| at this step (1 = strongest)."""

    layout: Layout = field(repr=False)
    options: SceneOptions
    scores: np.ndarray = field(repr=False)  # [n_edges] float64, this step (B)
    compare: np.ndarray | None = field(repr=False)  # [n_edges] float64, step A, when comparing
    edges: np.ndarray = field(repr=False)
    ranks: np.ndarray = field(repr=False)
    diff: EdgeDiff | None = field(repr=False)
    groups: tuple[EdgeGroup, ...] = field(repr=False)
    legend: tuple[LegendEntry, ...]
    node_fill: tuple[str, ...] = field(repr=False)
    node_mass: np.ndarray = field(repr=False)  # [n_nodes] Σ|score| of the drawn edges
    node_active: np.ndarray = field(repr=False)  # [n_nodes] bool: a drawn edge touches it
    in_circuit: np.ndarray | None = field(repr=False)  # [n_nodes] bool, the run's circuit
    node_value: np.ndarray | None = field(repr=False)  # [n_nodes] the boxes' colouring values
    node_value_step: int | None  # the analysed step they are from
    node_value_mode: str | None  # which analysis ("dla" or a role)
    focus: int | None
    band_in: np.ndarray = field(repr=False)  # y boundaries of the layout's bands
    band_out: np.ndarray = field(repr=False)  # where they are drawn (collapsed bands shrink)

    @property
    def label_colors(self) -> tuple[str, ...]:
        """Each box's label colour: white on a dark fill, dark grey otherwise."""
        return tuple(label_color(fill) for fill in self.node_fill)

    @property
    def n_drawn(self) -> int:
        return len(self.edges)

    def warp_y(self, y: np.ndarray) -> np.ndarray:
        """Layout y to drawn y (the identity unless layers collapsed)."""
        return np.interp(y, self.band_in, self.band_out)

    def curves(self, edges: np.ndarray) -> np.ndarray:
        """``[len(edges), points, 2]`` drawn curves of ``edges``."""
        curves = np.array(self.layout.edge_curves[edges], dtype=np.float64)
        curves[..., 1] = self.warp_y(curves[..., 1])
        return curves

    def boxes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x centre, y centre, width, height) of every box as drawn."""
        layout = self.layout
        top = self.warp_y(layout.node_y + layout.node_h / 2)
        bottom = self.warp_y(layout.node_y - layout.node_h / 2)
        return layout.node_x, (top + bottom) / 2, layout.node_w, top - bottom

    def y_range(self) -> tuple[float, float]:
        low, high = self.layout.y_range()
        return float(self.warp_y(np.array([low]))[0]), float(self.warp_y(np.array([high]))[0])

    def layer_ticks(self) -> tuple[list[float], list[str]]:
        """y of each layer's heads as drawn, and its label; collapsed layers are left out."""
        layout = self.layout
        ys = self.warp_y(np.arange(layout.n_layers, dtype=np.float64))
        scale = np.diff(self.band_out) / np.diff(self.band_in)
        first = 0 if layout.paper else 1
        shown = scale[first : first + layout.n_layers] > COLLAPSED_BAND + 1e-9
        return (
            [float(y) for y, on in zip(ys, shown) if on],
            [f"layer {i}" for i, on in enumerate(shown) if on],
        )


def build_scene(
    layout: Layout,
    scores: np.ndarray,
    selected: np.ndarray | None = None,
    options: SceneOptions | None = None,
    *,
    compare: np.ndarray | None = None,
    noise_std: np.ndarray | None = None,
    node_values: NodeValues | None = None,
    step: float = 0,
) -> Scene:
    """The scene of one step (``scores``), or of the change from ``compare`` (step A) to it.

    ``scores``, ``compare``, ``noise_std``: per-edge vectors in the layout's edge order;
    ``selected``: the run's own circuit at this step (boolean per edge); ``node_values``: colour
    the boxes by this analysis at ``step`` (the training step shown) instead of by their kind."""
    options = options or SceneOptions()
    scores = _vector("scores", scores, layout.n_edges).astype(np.float64)
    order = rank_order(scores)
    within = None
    if selected is not None:
        selected = _vector("selected", selected, layout.n_edges).astype(bool)
    if options.only_selected:
        if selected is None:
            raise ValueError("only_selected needs the run's circuit (selected)")
        within = selected
    focus = _focus_index(layout, options.highlight)
    diff = None
    if compare is None:
        edges = select_edges(
            scores, threshold=options.threshold, top_n=options.top_n, within=within, order=order
        )
        strength = np.abs(np.nan_to_num(scores[edges]))
    else:
        compare = _vector("compare", compare, layout.n_edges).astype(np.float64)
        if noise_std is not None:
            noise_std = _vector("noise_std", noise_std, layout.n_edges)
        diff = diff_edges(
            compare,
            scores,
            threshold=options.threshold,
            top_n=options.top_n,
            noise_std=noise_std,
            noise_k=options.noise_k,
            edge_src_node=layout.edge_src_node,
            edge_dst_node=layout.edge_dst_node,
        )
        edges = diff.edges
        strength = np.maximum(
            np.abs(np.nan_to_num(compare[edges])), np.abs(np.nan_to_num(scores[edges]))
        )
        # The union, strongest first (as a top-N list reads).
        ranking = np.argsort(-strength, kind="stable")
        edges, strength = edges[ranking], strength[ranking]
        diff = _reordered(diff, ranking)
    keep, dim = _focus_masks(layout, edges, focus, options.focus)
    edges, strength, dim = edges[keep], strength[keep], dim[keep]
    if diff is not None:
        diff = _reordered(diff, np.flatnonzero(keep))
    groups = _groups(layout, scores, edges, strength, dim, diff, options)
    mass = np.bincount(layout.edge_src_node[edges], strength, layout.n_nodes) + np.bincount(
        layout.edge_dst_node[edges], strength, layout.n_nodes
    )
    active = np.zeros(layout.n_nodes, bool)
    active[layout.edge_src_node[edges]] = True
    active[layout.edge_dst_node[edges]] = True
    in_circuit = None if selected is None else circuit_nodes(layout, selected)
    legend = _legend(groups, in_circuit is not None and bool(in_circuit.any()))
    value = value_step = None
    if node_values is None:
        fills = node_fills(layout, mass, active)
    else:
        if node_values.values.shape[1] != layout.n_nodes:
            raise ValueError(
                f"node values must have one column per box ({layout.n_nodes}), got "
                f"{node_values.values.shape[1]}"
            )
        row = node_values.row_at(step)
        value, value_step = node_values.values[row], int(node_values.steps[row])
        fills = value_fills(node_values, value)
        legend += value_legend(node_values.mode, value_step, node_values.scale)
    band_in = layout.band_edges()
    band_out = _collapsed_bands(layout, active) if options.collapse else band_in.copy()
    return Scene(
        layout=layout,
        options=options,
        scores=scores,
        compare=compare,
        edges=edges,
        ranks=edge_ranks(order),
        diff=diff,
        groups=tuple(groups),
        legend=legend,
        node_fill=fills,
        node_mass=mass,
        node_active=active,
        in_circuit=in_circuit,
        node_value=value,
        node_value_step=value_step,
        node_value_mode=None if node_values is None else node_values.mode,
        focus=focus,
        band_in=band_in,
        band_out=band_out,
    )


def _vector(name: str, values, n_edges: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n_edges,):
        raise ValueError(
            f"{name} must have one entry per valid edge ({n_edges}), got shape {values.shape}; "
            "is it from another model's graph?"
        )
    return values


def _focus_index(layout: Layout, highlight: str | None) -> int | None:
    if highlight is None:
        return None
    index = layout.node_index()
    if highlight not in index:
        raise ValueError(
            f"highlight {highlight!r} is not a box of this graph; the nearest is "
            f"{layout.nearest_node(highlight)!r}"
        )
    return index[highlight]


def _reordered(diff: EdgeDiff, positions: np.ndarray) -> EdgeDiff:
    return EdgeDiff(
        edges=diff.edges[positions],
        category=diff.category[positions],
        edge_iou=diff.edge_iou,
        node_iou=diff.node_iou,
        n_a=diff.n_a,
        n_b=diff.n_b,
    )


# ---- 2. focus ----------------------------------------------------------------------------------


def _focus_masks(layout, edges, focus, paths_only) -> tuple[np.ndarray, np.ndarray]:
    """(keep, dim) over ``edges``: with a focus box, ``dim`` marks edges that do not touch it; in
    focus mode ``keep`` drops every edge not on a drawn path through it."""
    keep = np.ones(len(edges), bool)
    dim = np.zeros(len(edges), bool)
    if focus is None:
        return keep, dim
    if paths_only:
        keep = on_paths_through(layout, edges, focus)
    else:
        dim = ~layout.edges_of_node(focus)[edges]
    return keep, dim


def on_paths_through(layout: Layout, edges: np.ndarray, node: int) -> np.ndarray:
    """Boolean over ``edges``: the edge lies on a path (of ``edges``) through box ``node``.

    A key/value group's bar feeds the query heads it serves, so it links to them. With A the boxes
    that reach ``node`` (itself included) and D those it reaches, edge s -> d lies on such a path
    iff d is in A (then s is too) or s is in D."""
    src = layout.edge_src_node[edges]
    dst = layout.edge_dst_node[edges]
    link_src, link_dst = _kv_links(layout)
    src = np.concatenate([src, link_src])
    dst = np.concatenate([dst, link_dst])
    up = np.zeros(layout.n_nodes, bool)
    down = np.zeros(layout.n_nodes, bool)
    up[node] = down[node] = True
    for _ in range(layout.n_nodes):  # at most the depth of the graph; stops when nothing changes
        new_up = up.copy()
        new_up[src[up[dst]]] = True
        new_down = down.copy()
        new_down[dst[down[src]]] = True
        if (new_up == up).all() and (new_down == down).all():
            break
        up, down = new_up, new_down
    n = len(edges)
    return up[dst[:n]] | down[src[:n]]


def _kv_links(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(kv bar, query head) box pairs: each key/value group's bar feeds its heads."""
    kinds = np.asarray(layout.node_kind)
    bars = np.flatnonzero(kinds == "kv")
    if not len(bars):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    group = layout.n_heads // layout.n_kv_heads
    heads = np.flatnonzero(kinds == "head")
    head_of = {(int(layout.node_layer[h]), int(layout.node_head[h])): h for h in heads}
    pairs = [
        (b, head_of[(int(layout.node_layer[b]), int(layout.node_head[b]) * group + k)])
        for b in bars.tolist()
        for k in range(group)
    ]
    link = np.asarray(pairs, dtype=np.int64)
    return link[:, 0], link[:, 1]


# ---- 3. edge styles ----------------------------------------------------------------------------


def density_scale(n_shown: int) -> float:
    """Thinner lines when many edges are shown, so that a dense view stays readable."""
    return float(np.clip(np.sqrt(150 / max(n_shown, 1)), 0.4, 1.0))


def width_bins(strength: np.ndarray) -> np.ndarray:
    """Bin (0..3) of each |score| relative to the largest one, on a square-root scale (attribution
    scores are heavy-tailed: on a linear one nearly every edge of a large model is in the thinnest
    bin)."""
    top = float(strength.max()) if len(strength) else 1.0
    return np.digitize(np.sqrt(strength / (top or 1.0)), WIDTH_BINS)


def _groups(layout, scores, edges, strength, dim, diff, options) -> list[EdgeGroup]:
    scale = options.line_scale * density_scale(len(edges))
    groups: list[EdgeGroup] = []
    if dim.any():
        groups.append(EdgeGroup(edges[dim], S.FADED, FADED_WIDTH, FADED_OPACITY, FADED_LABEL))
    bins = width_bins(strength)
    bright = ~dim
    for label, members, color, dash in _classes(layout, scores, edges, diff, options.color_by):
        first = True
        for level in reversed(range(len(WIDTHS))):
            chosen = edges[members & bright & (bins == level)]
            if len(chosen):
                groups.append(
                    EdgeGroup(
                        chosen,
                        color,
                        WIDTHS[level] * scale,
                        OPACITIES[level],
                        label,
                        dash,
                        legend=first and (dash == "solid" or diff is not None),
                    )
                )
                first = False
    if diff is None and options.color_by == "target" and (scores[edges[bright]] >= 0).any():
        groups.append(EdgeGroup(edges[:0], S.DOTTED_SAMPLE, 0.0, 1.0, DOTTED_LABEL, "dot", True))
    return sorted(groups, key=lambda group: group.width)


def _classes(layout, scores, edges, diff, color_by):
    """(legend label, member mask over ``edges``, colour, dash) of each colour class."""
    if diff is not None:
        return [
            (
                S.DIFF_LABELS[name],
                diff.category == code,
                S.DIFF_COLORS[name],
                "dot" if name == "removed" else "solid",
            )
            for code, name in enumerate(DIFF_CATEGORIES)
        ]
    negative = scores[edges] < 0
    if color_by == "sign":
        return [
            (S.HELPS_LABEL, negative, S.HELPS, "solid"),
            (S.HURTS_LABEL, ~negative, S.HURTS, "solid"),
        ]
    target = layout.edge_target[edges]
    classes = []
    for name, color in S.TARGET_COLORS.items():
        is_target = target == TARGET_CODES[name]
        classes.append((f"into {name}", is_target & negative, color, "solid"))
        classes.append((f"into {name}", is_target & ~negative, color, "dot"))
    return classes


LEGEND_ORDER = {
    label: i
    for i, label in enumerate(
        [S.HELPS_LABEL, S.HURTS_LABEL]
        + [f"into {t}" for t in S.TARGETS]
        + [DOTTED_LABEL]
        + [S.DIFF_LABELS[c] for c in reversed(DIFF_CATEGORIES)]
        + [FADED_LABEL, CIRCUIT_LABEL]
    )
}


def _legend(groups: list[EdgeGroup], with_circuit: bool) -> tuple[LegendEntry, ...]:
    """One entry per colour class, in a stable order (groups are ordered by width)."""
    seen: dict[str, LegendEntry] = {}
    for group in groups:
        if group.legend and group.label not in seen:
            seen[group.label] = LegendEntry(group.label, group.color, group.dash)
    entries = sorted(seen.values(), key=lambda e: LEGEND_ORDER.get(e.label, 99))
    if with_circuit:
        entries.append(LegendEntry(CIRCUIT_LABEL, S.CIRCUIT_LINE, kind="box"))
    return tuple(entries)


# ---- 4. boxes ----------------------------------------------------------------------------------


def node_fills(layout: Layout, mass: np.ndarray, active: np.ndarray) -> tuple[str, ...]:
    """Each box's fill: its kind's colour mixed with white by its share of the largest Σ|score|
    (square root, in ``FILL_LEVELS`` steps from ``MIN_FILL`` up to 1); white when no drawn edge
    touches it."""
    top = float(mass.max()) if len(mass) and mass.max() > 0 else 1.0
    level = np.floor(np.sqrt(np.clip(mass / top, 0.0, 1.0)) * FILL_LEVELS + 0.5) / FILL_LEVELS
    strength = MIN_FILL + (1 - MIN_FILL) * level
    fills = []
    for kind, on, t in zip(layout.node_kind, active.tolist(), strength.tolist()):
        fills.append(mix_white(KIND_FILL[kind], t) if on else S.IDLE_FILL)
    return tuple(fills)


def value_legend(mode: str, step: int, scale: float) -> tuple[LegendEntry, ...]:
    """The filled swatches that explain boxes coloured by ``mode``: the first names the analysed
    step, the last the value drawn at full colour."""
    colors = (S.HELPS, S.HURTS) if mode == "dla" else (S.ROLE_FILL,)
    labels = list(S.NODE_COLOR_LABELS[mode])
    full = f"full colour at {'±' if mode == 'dla' else ''}{scale_text(scale)}"
    if len(labels) == 1:
        labels[0] += f" (step {step}; {full})"
    else:
        labels[0] += f" (step {step})"
        labels[-1] += f" ({full})"
    return tuple(LegendEntry(label, color, kind="fill") for label, color in zip(labels, colors))


def scale_text(scale: float) -> str:
    """``scale`` to three significant digits in fixed notation (as the browser renderer writes
    it: ``scaleText``)."""
    digits = max(0, 2 - math.floor(math.log10(scale)))
    return f"{scale:.{digits}f}"


def circuit_nodes(layout: Layout, selected: np.ndarray) -> np.ndarray:
    """Boolean ``[n_nodes]``: heads, key/value groups and MLPs the run's circuit touches (and
    therefore trains)."""
    chosen = np.flatnonzero(np.asarray(selected, dtype=bool))
    touched = np.zeros(layout.n_nodes, bool)
    touched[layout.edge_src_node[chosen]] = True
    touched[layout.edge_dst_node[chosen]] = True
    kinds = np.asarray(layout.node_kind)
    return touched & np.isin(kinds, ("head", "kv", "mlp"))


# ---- 5. collapsing empty layers ----------------------------------------------------------------


def _collapsed_bands(layout: Layout, active: np.ndarray) -> np.ndarray:
    """Band boundaries as drawn: a layer none of whose boxes is active gets ``COLLAPSED_BAND``."""
    band_in = layout.band_edges()
    heights = np.diff(band_in)
    busy = np.zeros(layout.n_layers, bool)
    kinds = np.asarray(layout.node_kind)
    inner = np.isin(kinds, ("head", "kv", "mlp"))
    busy[layout.node_layer[inner & active]] = True
    first = 0 if layout.paper else 1
    heights[first : first + layout.n_layers] = np.where(busy, 1.0, COLLAPSED_BAND)
    return band_in[0] + np.concatenate([[0.0], np.cumsum(heights)])


# ---- hover text (plotly and the browser) -------------------------------------------------------


def edge_hover(scene: Scene) -> list[str]:
    """One line of hover text per drawn edge, in ``scene.edges`` order."""
    names = scene.layout.edge_names
    n_all = scene.layout.n_edges
    scores, ranks = scene.scores, scene.ranks
    if scene.diff is None:
        return [
            f"{names[e].replace('->', ' → ')}<br>score {scores[e]:+.4g}<br>rank {ranks[e]} of {n_all}"
            for e in scene.edges.tolist()
        ]
    a = scene.compare
    labels = [S.DIFF_LABELS[c] for c in DIFF_CATEGORIES]
    return [
        f"{names[e].replace('->', ' → ')}<br>A {a[e]:+.4g} → B {scores[e]:+.4g}"
        f"<br>{labels[c]}; rank in B {ranks[e]} of {n_all}"
        for e, c in zip(scene.edges.tolist(), scene.diff.category.tolist())
    ]


def node_label(kind: str, head: int) -> str:
    return {
        "head": f"h{head}",
        "kv": f"kv{head}",
        "mlp": "MLP",
        "input": "input",
        "logits": "logits",
    }[kind]
