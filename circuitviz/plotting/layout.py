"""One fixed layered layout per graph, so that on a step slider motion means change.

Coordinates are in layer units: ``input`` is a wide bar at the bottom (y = -1), layer ``L``'s heads
sit left to right at y = L (x = 0 .. n_heads - 1) with the layer's MLP to their right, raised half a
layer because it reads that layer's heads, and ``logits`` is a wide bar on top (y = n_layers).

Every edge leaves the top of its writer's box and enters the bottom of its reader's box. The q, k and
v readers of a head are drawn into that head's box at its left, middle and right, so one box stands
for the head as a whole (as in the paper's figures). Under grouped-query attention a k/v reader is a
key/value group; it is drawn into the box of the group's first query head. Edges to or from the
input and logits bars meet the bar straight below or above the other end, like a bus.

Edges are quadratic Bézier curves sampled at a few points, bowed sideways in proportion to the
number of layers they skip, so that long edges do not run through the boxes of one column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from circuitviz.graph.topology import Graph, parse_node

N_CURVE_POINTS = 8  # samples per edge curve; each curve is followed by one NaN gap in a trace
BOX_W = 0.8
BOX_H = 0.3
MLP_RISE = 0.5
QKV_OFFSET = {"q": -0.25, "k": 0.0, "v": 0.25, None: 0.0}
TARGET_CODES = {"q": 0, "k": 1, "v": 2, "mlp": 3, "logits": 4}


@dataclass(frozen=True, eq=False)
class Layout:
    """Node boxes and edge geometry of one graph; arrays are read-only and indexed as follows.

    Nodes (``node_*``, length ``n_nodes``): one per box, i.e. per base name (``a3.h1``, ``m3``,
    ``input``, ``logits``), ordered input, then per layer heads then MLP, then logits.
    Edges (``edge_*``, length ``n_edges``): in the graph's canonical valid-edge order
    (``Graph.edge_index()``), the order of every per-edge score vector.
    """

    n_layers: int
    n_heads: int
    node_names: tuple[str, ...]
    node_kind: tuple[str, ...]  # "input" | "head" | "mlp" | "logits"
    node_layer: np.ndarray = field(repr=False)  # [n_nodes] int; input -1, logits n_layers
    node_head: np.ndarray = field(repr=False)  # [n_nodes] int; -1 for non-heads
    node_x: np.ndarray = field(repr=False)  # [n_nodes] box centre
    node_y: np.ndarray = field(repr=False)
    node_w: np.ndarray = field(repr=False)  # [n_nodes] box width
    edge_names: tuple[str, ...] = field(repr=False)
    edge_src_node: np.ndarray = field(repr=False)  # [n_edges] int index into node_*
    edge_dst_node: np.ndarray = field(repr=False)
    edge_target: np.ndarray = field(repr=False)  # [n_edges] int8, TARGET_CODES
    edge_curves: np.ndarray = field(repr=False)  # [n_edges, N_CURVE_POINTS, 2] float32 (x, y)

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_edges(self) -> int:
        return len(self.edge_names)

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def x_range(self) -> tuple[float, float]:
        return (-0.7, self.n_heads + 1.2)

    def y_range(self) -> tuple[float, float]:
        return (-1.45, self.n_layers + 0.45)

    def edges_of_node(self, node: int) -> np.ndarray:
        """Boolean ``[n_edges]``: edges that start or end at box ``node``."""
        return (self.edge_src_node == node) | (self.edge_dst_node == node)


def build_layout(graph: Graph) -> Layout:
    """The layout of ``graph``. Deterministic: the same graph always gets the same positions."""
    names, kinds, layers, heads, xs, ys, ws = _nodes(graph)
    index = {name: i for i, name in enumerate(names)}
    group = graph.n_heads // graph.n_kv_heads

    src_node = np.array([index[parse_node(n).base] for n in graph.src_names])
    dst_refs = [parse_node(n, graph.n_layers) for n in graph.dst_names]
    dst_node, dst_target, dst_offset = [], [], []
    for ref in dst_refs:
        if ref.kind == "head":
            head = ref.head if ref.qkv == "q" else ref.head * group  # k/v groups: first query head
            dst_node.append(index[f"a{ref.layer}.h{head}"])
            dst_target.append(TARGET_CODES[ref.qkv])
        else:
            dst_node.append(index[ref.base])
            dst_target.append(TARGET_CODES["mlp" if ref.kind == "mlp" else "logits"])
        dst_offset.append(QKV_OFFSET[ref.qkv] * BOX_W)

    pairs = graph.edge_index().numpy()  # [n_edges, 2] (src_idx, dst_idx)
    e_src = src_node[pairs[:, 0]]
    e_dst = np.asarray(dst_node)[pairs[:, 1]]
    node_x, node_y, node_w = np.asarray(xs), np.asarray(ys), np.asarray(ws)
    curves = _edge_curves(
        node_x, node_y, node_w, np.asarray(kinds), e_src, e_dst, np.asarray(dst_offset)[pairs[:, 1]]
    )
    layout = Layout(
        n_layers=graph.n_layers,
        n_heads=graph.n_heads,
        node_names=tuple(names),
        node_kind=tuple(kinds),
        node_layer=np.asarray(layers),
        node_head=np.asarray(heads),
        node_x=node_x,
        node_y=node_y,
        node_w=node_w,
        edge_names=tuple(graph.edge_names()),
        edge_src_node=e_src,
        edge_dst_node=e_dst,
        edge_target=np.asarray(dst_target, dtype=np.int8)[pairs[:, 1]],
        edge_curves=curves,
    )
    for value in vars(layout).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return layout


def _nodes(graph: Graph):
    names, kinds, layers, heads, xs, ys, ws = [], [], [], [], [], [], []
    centre = (graph.n_heads - 1) / 2
    bar_w = max(graph.n_heads - 0.2, BOX_W)

    def add(name, kind, layer, head, x, y, w):
        names.append(name)
        kinds.append(kind)
        layers.append(layer)
        heads.append(head)
        xs.append(x)
        ys.append(y)
        ws.append(w)

    if graph.has_input:  # the paper's graph has no input or logits node
        add("input", "input", -1, -1, centre, -1.0, bar_w)
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            add(f"a{layer}.h{head}", "head", layer, head, float(head), float(layer), BOX_W)
        add(f"m{layer}", "mlp", layer, -1, graph.n_heads + 0.25, layer + MLP_RISE, BOX_W)
    if graph.has_input:
        add("logits", "logits", graph.n_layers, -1, centre, float(graph.n_layers), bar_w)
    return names, kinds, layers, heads, xs, ys, ws


def _edge_curves(node_x, node_y, node_w, kinds, e_src, e_dst, dst_offset) -> np.ndarray:
    """``[n_edges, N_CURVE_POINTS, 2]`` sampled Bézier curves from writer top to reader bottom."""
    bar = (kinds == "input") | (kinds == "logits")
    x1 = node_x[e_dst] + dst_offset
    y1 = node_y[e_dst] - BOX_H / 2
    y0 = node_y[e_src] + BOX_H / 2
    # A writer box leaves from its top centre; the input bar leaves straight below the reader.
    half = node_w[e_src] / 2 - 0.1
    x0 = np.where(
        bar[e_src], np.clip(x1, node_x[e_src] - half, node_x[e_src] + half), node_x[e_src]
    )
    # The logits bar is entered straight above the writer.
    half_d = node_w[e_dst] / 2 - 0.1
    x1 = np.where(bar[e_dst], np.clip(x0, node_x[e_dst] - half_d, node_x[e_dst] + half_d), x1)

    span = np.maximum(y1 - y0, 0.0)
    # Bow sideways by the number of skipped layers, away from the straight line's own column;
    # alternate sides by source layer so that bundles from one column do not coincide.
    direction = np.where(x1 > x0, 1.0, np.where(x1 < x0, -1.0, 0.0))
    side = np.where(node_y[e_src].astype(int) % 2 == 0, 1.0, -1.0)
    direction = np.where(direction == 0.0, side, direction)
    skipped = np.clip(span - 1.0, 0.0, None)
    bow = np.where(bar[e_src] | bar[e_dst], 0.0, 0.22 * np.sqrt(skipped)) * direction
    cx = (x0 + x1) / 2 - bow * (np.abs(x1 - x0) < 1.5)
    cy = (y0 + y1) / 2

    t = np.linspace(0.0, 1.0, N_CURVE_POINTS)[None, :]  # [1, points]
    a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t**2
    xs = a * x0[:, None] + b * cx[:, None] + c * x1[:, None]
    ys = a * y0[:, None] + b * cy[:, None] + c * y1[:, None]
    return np.stack([xs, ys], axis=-1).astype(np.float32)
