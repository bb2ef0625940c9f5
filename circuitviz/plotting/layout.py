"""One fixed layered layout per model shape, so that on a step slider motion means change.

Built from node names alone (``circuitviz.graph.names``), so the dashboard never imports torch.
Coordinates are in layer units. Layer ``L`` occupies the band ``[L - 0.33, L + 0.67]``: its heads sit
left to right at ``y = L`` (``x = 0 .. n_heads - 1``); under grouped-query attention each key/value
group is a thin bar just below the heads it serves; the layer's MLP sits in a column of its own to the
right, raised half a layer because it reads that layer's heads; with MLP neuron groups (``m{L}.g{j}``)
that box is a compact strip of G cells, one per group, left to right. ``input`` is a wide bar below
layer 0 and ``logits`` a wide bar above the last layer.

Edges leave the top of their writer's box and enter the bottom of their reader's box: a head's q, k
and v readers at its left, middle and right (a key/value group's k and v at its bar). Routing, per edge:

1. Find the obstacles strictly between the writer's top and the reader's bottom whose columns the
   straight path would cross (head rows, MLP boxes).
2. None: one S-shaped cubic Bézier (vertical tangents at both ends) from writer to reader; it stays in
   the free gap between rows.
3. Otherwise route through a *gutter*, the free vertical channel between two columns: an S-curve
   from the writer into the gutter in the gap just above the writer, a straight run up the gutter,
   and an S-curve out of the gutter in the gap just below the reader. The gutter is the one nearest
   the midpoint of the two ends (between two equally near ones, a side that alternates with the
   writer's and reader's layers), and each edge takes one of seven lanes in it by its writer's layer,
   so ``a0.h0 -> logits`` and ``a10.h0 -> logits`` run apart instead of on top of each other.
   The input bar is left, and the logits bar entered, straight from the gutter.

``edge_route`` keeps the seven numbers that define a route; ``edge_curves`` samples it at
``N_CURVE_POINTS`` points (the browser renderer samples the same routes the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from circuitviz.graph.names import node_lists, parse_node

N_CURVE_POINTS = 16  # samples per edge curve (two 8-point S-curves for a gutter route)
BOX_W = 0.8  # width of a head or MLP box
BOX_H = 0.32  # height of a head box
MLP_H = 0.24
MLP_RISE = 0.5  # an MLP sits half a layer above its layer's heads
BAR_H = 0.3  # input and logits bars
KV_H = 0.06  # a key/value group's bar
KV_DY = -0.25  # its centre, relative to its layer's heads
MLP_DX = 0.3  # the MLP column is this far right of the last head's column + 1
QKV_OFFSET = {"q": -0.25, "k": 0.0, "v": 0.25, None: 0.0}  # x offset inside a head box, x BOX_W
KV_OFFSET = {"k": -0.15, "v": 0.15}  # x offset (layer units) of k and v on a key/value group's bar
TARGET_CODES = {"q": 0, "k": 1, "v": 2, "mlp": 3, "logits": 4}
BAND_LOW = -0.33  # layer L's band is [L + BAND_LOW, L + BAND_LOW + 1]
LOGITS_DY = 0.05
N_LANES = 7
KINDS = ("input", "head", "kv", "mlp", "logits")


@dataclass(frozen=True, eq=False)
class Layout:
    """Boxes and edge geometry of one model shape; arrays are read-only and indexed as follows.

    Boxes (``node_*``, length ``n_nodes``): ``input``, then per layer its heads (``a3.h1``), its
    key/value groups under grouped-query attention (``a3.kv0``, a box name only), its MLP (``m3``),
    then ``logits``. Edges (``edge_*``, length ``n_edges``): in the canonical valid-edge order of
    ``node_lists(...).edge_pairs()``, the order of every per-edge score vector; ``edge_src`` and
    ``edge_dst`` index ``src_names`` / ``dst_names`` (the graph's writer and reader names).
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    paper: bool
    mlp_groups: int | None
    node_names: tuple[str, ...]
    node_kind: tuple[str, ...]  # one of KINDS
    node_layer: np.ndarray = field(repr=False)  # [n_nodes] int; input -1, logits n_layers
    node_head: np.ndarray = field(repr=False)  # [n_nodes] int; head or kv group, -1 otherwise
    node_x: np.ndarray = field(repr=False)  # [n_nodes] box centre
    node_y: np.ndarray = field(repr=False)
    node_w: np.ndarray = field(repr=False)  # [n_nodes] box width
    node_h: np.ndarray = field(repr=False)  # [n_nodes] box height
    src_names: tuple[str, ...] = field(repr=False)
    dst_names: tuple[str, ...] = field(repr=False)
    edge_src: np.ndarray = field(repr=False)  # [n_edges] index into src_names
    edge_dst: np.ndarray = field(repr=False)  # [n_edges] index into dst_names
    edge_src_node: np.ndarray = field(repr=False)  # [n_edges] box index
    edge_dst_node: np.ndarray = field(repr=False)
    edge_target: np.ndarray = field(repr=False)  # [n_edges] int8, TARGET_CODES
    edge_route: np.ndarray = field(repr=False)  # [n_edges, 7] x0 y0 xg ya yb x1 y1 (xg NaN: direct)
    gutters: np.ndarray = field(repr=False)  # x of each gutter

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_edges(self) -> int:
        return len(self.edge_src)

    @property
    def shape(self) -> tuple[int, int, int, bool]:
        return (self.n_layers, self.n_heads, self.n_kv_heads, self.paper)

    @property
    def key(self) -> tuple[int, int, int, bool, int | None]:
        """What decides the layout: the shape and the MLP groups."""
        return (*self.shape, self.mlp_groups)

    @cached_property
    def edge_names(self) -> tuple[str, ...]:
        src, dst = self.src_names, self.dst_names
        return tuple(
            f"{src[s]}->{dst[d]}" for s, d in zip(self.edge_src.tolist(), self.edge_dst.tolist())
        )

    @cached_property
    def edge_curves(self) -> np.ndarray:
        """``[n_edges, N_CURVE_POINTS, 2]`` float32 (x, y): every route, sampled."""
        curves = sample_routes(self.edge_route)
        curves.setflags(write=False)
        return curves

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def x_range(self) -> tuple[float, float]:
        return (-0.75, self.n_heads + MLP_DX + 0.85)

    def y_range(self) -> tuple[float, float]:
        return (-1.25 if not self.paper else BAND_LOW, self.n_layers + 0.3)

    def band_edges(self) -> np.ndarray:
        """y boundaries of the bands the layout is stacked from: input (unless the paper's graph),
        each layer, logits; ``[n_bands + 1]`` ascending. Collapsing an empty layer shrinks its band."""
        first = -1 if not self.paper else 0
        last = self.n_layers + (0 if self.paper else 1)
        return np.arange(first, last + 1, dtype=np.float64) + BAND_LOW

    def edges_of_node(self, node: int) -> np.ndarray:
        """Boolean ``[n_edges]``: edges that start or end at box ``node``."""
        return (self.edge_src_node == node) | (self.edge_dst_node == node)

    def nearest_node(self, name: str) -> str:
        """The box name closest to ``name`` (for "did you mean"): same kind, layer and head clipped
        into this graph; the first head when nothing parses."""
        index = self.node_index()
        if name in index:
            return name
        try:
            ref = parse_node(name.split("<")[0], self.n_layers)
        except ValueError:
            return self.node_names[0]
        layer = min(max(ref.layer, 0), self.n_layers - 1)
        if ref.kind == "mlp":
            if self.mlp_groups is not None:
                return f"m{layer}.g{min(max(ref.group or 0, 0), self.mlp_groups - 1)}"
            return f"m{layer}"
        if ref.kind == "head":
            return f"a{layer}.h{min(max(ref.head or 0, 0), self.n_heads - 1)}"
        return ref.base if ref.base in index else self.node_names[0]


def build_layout(graph) -> Layout:
    """The layout of a model shape: anything with ``n_layers``, ``n_heads``, ``n_kv_heads`` and
    ``paper`` (and optionally ``mlp_groups``: a ``Graph``, a ``Layout``). Deterministic: the same
    shape gets the same positions."""
    return layout_for(
        graph.n_layers,
        graph.n_heads,
        graph.n_kv_heads,
        paper=bool(graph.paper),
        mlp_groups=getattr(graph, "mlp_groups", None),
    )


def layout_for(
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    paper: bool = False,
    mlp_groups: int | None = None,
) -> Layout:
    """The layout of a model shape, from node names only (no torch)."""
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    lists = node_lists(n_layers, n_heads, n_kv_heads, paper=paper, mlp_groups=mlp_groups)
    boxes = _Boxes(n_layers, n_heads, n_kv_heads, paper, mlp_groups)
    index = {name: i for i, name in enumerate(boxes.names)}
    src_node = np.array([index[parse_node(n).base] for n in lists.src_names])
    dst_node, dst_target, dst_dx = [], [], []
    for name in lists.dst_names:
        box, target, dx = boxes.reader(parse_node(name, n_layers))
        dst_node.append(index[box])
        dst_target.append(TARGET_CODES[target])
        dst_dx.append(dx)
    # Canonical edge order: row-major over (writer, reader) where the writer comes first.
    src_order = np.asarray(lists.src_order)
    dst_order = np.asarray(lists.dst_order)
    e_src, e_dst = np.nonzero(src_order[:, None] < dst_order[None, :])
    e_src_node = src_node[e_src]
    e_dst_node = np.asarray(dst_node)[e_dst]
    geometry = boxes.arrays()
    route = _routes(
        geometry,
        boxes,
        e_src_node,
        e_dst_node,
        np.asarray(dst_dx)[e_dst],
    )
    layout = Layout(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        paper=paper,
        mlp_groups=mlp_groups,
        node_names=tuple(boxes.names),
        node_kind=tuple(boxes.kinds),
        node_layer=geometry["layer"],
        node_head=geometry["head"],
        node_x=geometry["x"],
        node_y=geometry["y"],
        node_w=geometry["w"],
        node_h=geometry["h"],
        src_names=lists.src_names,
        dst_names=lists.dst_names,
        edge_src=e_src.astype(np.int32),
        edge_dst=e_dst.astype(np.int32),
        edge_src_node=e_src_node.astype(np.int32),
        edge_dst_node=e_dst_node.astype(np.int32),
        edge_target=np.asarray(dst_target, dtype=np.int8)[e_dst],
        edge_route=route,
        gutters=boxes.gutters(),
    )
    for value in vars(layout).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return layout


class _Boxes:
    """Box positions of one shape, and which box (and where on it) each reader name enters."""

    def __init__(
        self, n_layers: int, n_heads: int, n_kv_heads: int, paper: bool, mlp_groups: int | None
    ) -> None:
        self.n_layers, self.n_heads, self.n_kv_heads = n_layers, n_heads, n_kv_heads
        self.mlp_groups = mlp_groups
        self.group = n_heads // n_kv_heads
        self.gqa = n_kv_heads < n_heads
        self.mlp_x = n_heads + MLP_DX
        self.names: list[str] = []
        self.kinds: list[str] = []
        self._rows: list[tuple[int, int, float, float, float, float]] = []
        bar_centre = (n_heads + MLP_DX) / 2 - 0.1
        bar_w = n_heads + MLP_DX + 0.7
        if not paper:
            self._add("input", "input", -1, -1, bar_centre, -1.0, bar_w, BAR_H)
        for layer in range(n_layers):
            for head in range(n_heads):
                self._add(f"a{layer}.h{head}", "head", layer, head, head, layer, BOX_W, BOX_H)
            if self.gqa:
                for g in range(n_kv_heads):
                    centre = g * self.group + (self.group - 1) / 2
                    self._add(
                        f"a{layer}.kv{g}",
                        "kv",
                        layer,
                        g,
                        centre,
                        layer + KV_DY,
                        self.group - 1 + BOX_W,
                        KV_H,
                    )
            if mlp_groups is None:
                self._add(f"m{layer}", "mlp", layer, -1, self.mlp_x, layer + MLP_RISE, BOX_W, MLP_H)
                continue
            # A compact strip: the MLP's box cut into one cell per neuron group.
            cell = BOX_W / mlp_groups
            for group in range(mlp_groups):
                x = self.mlp_x - BOX_W / 2 + (group + 0.5) * cell
                self._add(
                    f"m{layer}.g{group}", "mlp", layer, group, x, layer + MLP_RISE, cell, MLP_H
                )
        if not paper:
            self._add(
                "logits", "logits", n_layers, -1, bar_centre, n_layers + LOGITS_DY, bar_w, BAR_H
            )

    def _add(self, name, kind, layer, head, x, y, w, h) -> None:
        self.names.append(name)
        self.kinds.append(kind)
        self._rows.append((layer, head, float(x), float(y), float(w), float(h)))

    def arrays(self) -> dict[str, np.ndarray]:
        rows = np.asarray(self._rows, dtype=np.float64).reshape(-1, 6)
        return {
            "layer": rows[:, 0].astype(np.int64),
            "head": rows[:, 1].astype(np.int64),
            "x": rows[:, 2],
            "y": rows[:, 3],
            "w": rows[:, 4],
            "h": rows[:, 5],
            "kind": np.asarray(self.kinds),
        }

    def reader(self, ref) -> tuple[str, str, float]:
        """(box name, target code name, x offset on the box) of a reader node."""
        if ref.kind == "head":
            if ref.qkv == "q" or not self.gqa:
                return f"a{ref.layer}.h{ref.head}", ref.qkv, QKV_OFFSET[ref.qkv] * BOX_W
            return f"a{ref.layer}.kv{ref.head}", ref.qkv, KV_OFFSET[ref.qkv]
        if ref.kind == "mlp":
            return ref.base, "mlp", 0.0  # m{L}, or the cell m{L}.g{j} of a neuron group
        if ref.kind == "logits":
            return "logits", "logits", 0.0
        raise ValueError(f"no box for reader {ref!r}")

    def gutters(self) -> np.ndarray:
        """Free vertical channels: left of head 0, between heads, between the last head and the
        MLP column, right of the MLP column."""
        between_heads = np.arange(-1, self.n_heads - 1) + 0.5
        last_head_right = self.n_heads - 1 + BOX_W / 2
        mlp_left = self.mlp_x - BOX_W / 2
        return np.concatenate(
            [between_heads, [(last_head_right + mlp_left) / 2, self.mlp_x + BOX_W / 2 + 0.25]]
        )

    def lane_spread(self) -> np.ndarray:
        """Half the width each gutter's lanes spread over."""
        spread = np.full(len(self.gutters()), 0.07)
        spread[-2] = 0.14
        spread[-1] = 0.1
        return spread

    def obstacles(self) -> np.ndarray:
        """``[n, 4]`` (y_low, y_high, x_low, x_high) of every row of boxes an edge may not cross."""
        rows = []
        low_offset = KV_DY - KV_H / 2 if self.gqa else -BOX_H / 2
        for layer in range(self.n_layers):
            rows.append((layer + low_offset, layer + BOX_H / 2, -BOX_W / 2, self.n_heads - 0.6))
            y = layer + MLP_RISE
            rows.append((y - MLP_H / 2, y + MLP_H / 2, self.mlp_x - BOX_W / 2, self.mlp_x + 0.4))
        return np.asarray(rows, dtype=np.float64)


def _routes(geometry, boxes: _Boxes, e_src, e_dst, dst_dx) -> np.ndarray:
    """``[n_edges, 7]`` float32 routes (x0, y0, xg, ya, yb, x1, y1); see the module docstring."""
    kind = geometry["kind"]
    x, y, h = geometry["x"], geometry["y"], geometry["h"]
    layer = geometry["layer"]
    from_input = kind[e_src] == "input"
    to_logits = kind[e_dst] == "logits"
    x1 = x[e_dst] + dst_dx
    y1 = y[e_dst] - h[e_dst] / 2
    y0 = y[e_src] + h[e_src] / 2
    x0 = np.where(from_input, x1, x[e_src])
    x1 = np.where(to_logits, x0, x1)

    # 1-2. Direct when no obstacle lies strictly between the ends within the columns crossed.
    obstacles = boxes.obstacles()
    lo, hi = np.minimum(x0, x1), np.maximum(x0, x1)
    between = (obstacles[None, :, 0] > y0[:, None] - 1e-9) & (
        obstacles[None, :, 1] < y1[:, None] + 1e-9
    )
    crossed = (obstacles[None, :, 2] < hi[:, None]) & (obstacles[None, :, 3] > lo[:, None])
    direct = ~(between & crossed).any(axis=1)

    # 3. Gutter nearest the midpoint; ties alternate sides with the layers (MLP writers go right).
    gutters = boxes.gutters()
    middle = np.where(from_input, x1, np.where(to_logits, x0, (x0 + x1) / 2))
    distance = np.abs(gutters[None, :] - middle[:, None])  # [n_edges, n_gutters]
    nearest = distance.min(axis=1, keepdims=True)
    ties = np.isclose(distance, nearest, atol=1e-6)
    go_right = (((layer[e_src] + 1) // N_LANES + layer[e_dst]) % 2 == 1) | (kind[e_src] == "mlp")
    first = np.argmax(ties, axis=1)
    last = ties.shape[1] - 1 - np.argmax(ties[:, ::-1], axis=1)
    choice = np.where(go_right, last, first)
    lane = (layer[e_src] + 1) % N_LANES
    spread = boxes.lane_spread()[choice]
    xg = gutters[choice] + (lane - (N_LANES - 1) / 2) / ((N_LANES - 1) / 2) * spread

    # Gap lines: just above the writer's row, just below the reader's row.
    ya = np.select(
        [from_input, kind[e_src] == "mlp"],
        [y0, layer[e_src] + MLP_RISE + MLP_H / 2 + 0.05],
        default=layer[e_src] + 0.44,
    )
    yb = np.select(
        [to_logits, kind[e_dst] == "mlp"],
        [y1, layer[e_dst] + 0.27],
        default=layer[e_dst] - 0.5,
    )
    x0 = np.where(from_input & ~direct, xg, x0)
    x1 = np.where(to_logits & ~direct, xg, x1)
    xg = np.where(direct, np.nan, xg)
    return np.stack([x0, y0, xg, ya, yb, x1, y1], axis=1).astype(np.float32)


def sample_routes(route: np.ndarray) -> np.ndarray:
    """``[n, N_CURVE_POINTS, 2]`` float32 points along routes ``[n, 7]`` (see ``_routes``)."""
    route = np.asarray(route, dtype=np.float64)
    x0, y0, xg, ya, yb, x1, y1 = route.T
    direct = np.isnan(xg)
    half = N_CURVE_POINTS // 2
    whole = _s_curve(x0, y0, x1, y1, np.linspace(0.0, 1.0, N_CURVE_POINTS))
    g = np.where(direct, 0.0, xg)
    first = _s_curve(x0, y0, g, ya, np.linspace(0.0, 1.0, half))
    second = _s_curve(g, yb, x1, y1, np.linspace(0.0, 1.0, N_CURVE_POINTS - half))
    routed = np.concatenate([first, second], axis=1)
    return np.where(direct[:, None, None], whole, routed).astype(np.float32)


def _s_curve(x0, y0, x1, y1, t) -> np.ndarray:
    """Cubic Bézier from (x0, y0) to (x1, y1) with vertical tangents at both ends: ``[n, t, 2]``."""
    t = t[None, :]
    a, b = (1 - t) ** 3 + 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2 + t**3  # x weights
    ym = (y0 + y1) / 2
    xs = a * x0[:, None] + b * x1[:, None]
    ys = (
        (1 - t) ** 3 * y0[:, None]
        + 3 * (1 - t) * t * ym[:, None]  # (1-t)^2 t + (1-t) t^2 = (1-t) t
        + t**3 * y1[:, None]
    )
    return np.stack([xs, ys], axis=-1)
