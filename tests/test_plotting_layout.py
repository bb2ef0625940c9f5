"""The fixed layered layout: every box placed once, every edge from a writer's top to a reader's
bottom, q/k/v into their head's box (or its key/value group's bar), input below everything and
logits above, and no edge drawn through a box it does not touch."""

import numpy as np
import pytest

from circuitviz.graph.topology import build_graph, parse_edge, parse_node
from circuitviz.plotting.layout import (
    KV_OFFSET,
    QKV_OFFSET,
    _s_curve,
    build_layout,
    layout_for,
)


@pytest.fixture(scope="module", params=[(3, 4, 4, False), (2, 4, 2, False), (3, 2, 2, True)])
def graph_and_layout(request):
    n_layers, n_heads, n_kv, paper = request.param
    graph = build_graph(n_layers, n_heads, n_kv, paper=paper)
    return graph, build_layout(graph)


def reader_box(graph, ref) -> str:
    """The box a reader is drawn into: its head, its key/value group's bar (grouped-query
    attention), its MLP, logits."""
    if ref.kind != "head":
        return ref.base
    if ref.qkv == "q" or graph.n_kv_heads == graph.n_heads:
        return f"a{ref.layer}.h{ref.head}"
    return f"a{ref.layer}.kv{ref.head}"


def test_one_box_per_base_node(graph_and_layout):
    graph, layout = graph_and_layout
    bases = {parse_node(n, graph.n_layers).base for n in graph.src_names + graph.dst_names}
    if graph.n_kv_heads < graph.n_heads:
        bases |= {f"a{L}.kv{g}" for L in range(graph.n_layers) for g in range(graph.n_kv_heads)}
    assert set(layout.node_names) == bases
    assert len(layout.node_names) == len(bases)
    assert layout.n_edges == graph.n_edges
    assert layout.edge_names == tuple(graph.edge_names())


def test_edges_run_from_writer_top_to_reader_bottom(graph_and_layout):
    graph, layout = graph_and_layout
    index = layout.node_index()
    for e, name in enumerate(layout.edge_names):
        src, dst = parse_edge(name)
        s_ref, d_ref = parse_node(src, graph.n_layers), parse_node(dst, graph.n_layers)
        s_box, d_box = index[s_ref.base], index[reader_box(graph, d_ref)]
        assert layout.edge_src_node[e] == s_box and layout.edge_dst_node[e] == d_box
        start, end = layout.edge_curves[e, 0], layout.edge_curves[e, -1]
        top = layout.node_y[s_box] + layout.node_h[s_box] / 2
        bottom = layout.node_y[d_box] - layout.node_h[d_box] / 2
        assert start[1] == pytest.approx(top, abs=1e-5)
        assert end[1] == pytest.approx(bottom, abs=1e-5)
        if d_ref.kind == "head":
            if layout.node_kind[d_box] == "head":  # q left, k middle, v right inside the box
                offset = QKV_OFFSET[d_ref.qkv] * 0.8
            else:  # k and v either side of the middle of the group's bar
                offset = KV_OFFSET[d_ref.qkv]
            assert end[0] == pytest.approx(layout.node_x[d_box] + offset, abs=1e-5)
        assert end[1] > start[1], f"{name} does not go upward"


def test_input_at_the_bottom_logits_on_top(graph_and_layout):
    graph, layout = graph_and_layout
    names = list(layout.node_names)
    heads = [i for i, k in enumerate(layout.node_kind) if k == "head"]
    if graph.paper:
        assert "input" not in names and "logits" not in names
        return
    assert layout.node_y[names.index("input")] < layout.node_y.min() + 1e-9
    assert layout.node_y[names.index("logits")] > layout.node_y.max() - 1e-9
    low, high = layout.y_range()
    for end in ("input", "logits"):  # both bars lie inside the drawn range
        i = names.index(end)
        assert low < layout.node_y[i] - layout.node_h[i] / 2
        assert layout.node_y[i] + layout.node_h[i] / 2 < high
    # Heads of one layer share a row, left to right by head index.
    for layer in range(graph.n_layers):
        row = [i for i in heads if layout.node_layer[i] == layer]
        assert np.all(np.diff(layout.node_x[row]) > 0)
        assert len(set(layout.node_y[row].tolist())) == 1


def dense_routes(layout, n_points=80) -> np.ndarray:
    """Every route sampled far more finely than drawn, its straight gutter run included."""
    x0, y0, xg, ya, yb, x1, y1 = layout.edge_route.astype(np.float64).T
    t = np.linspace(0, 1, n_points)
    direct = np.isnan(xg)
    g = np.where(direct, 0.0, xg)
    whole = _s_curve(x0, y0, x1, y1, t)
    run = np.stack([np.repeat(g[:, None], n_points, 1), ya[:, None] + (yb - ya)[:, None] * t], -1)
    routed = np.concatenate([_s_curve(x0, y0, g, ya, t), run, _s_curve(g, yb, x1, y1, t)], 1)
    return np.where(direct[:, None, None], np.concatenate([whole] * 3, 1), routed)


@pytest.mark.parametrize("shape", [(6, 5, 5), (8, 6, 2), (12, 12, 12)])
def test_no_edge_passes_through_a_box(shape):
    """The oracle: sample each route densely and look for points strictly inside any head or MLP
    box other than its own two ends (a key/value bar sits under its heads, so q edges may cross
    it). A straight skip-layer edge would fail this at once."""
    layout = layout_for(*shape)
    step = max(1, layout.n_edges // 3000)
    edges = np.arange(0, layout.n_edges, step)
    points = dense_routes(layout)[edges]  # [edges, samples, 2]
    boxes = np.array([k in ("head", "mlp") for k in layout.node_kind])
    x_lo = layout.node_x - layout.node_w / 2 + 0.01
    x_hi = layout.node_x + layout.node_w / 2 - 0.01
    y_lo = layout.node_y - layout.node_h / 2 + 0.005
    y_hi = layout.node_y + layout.node_h / 2 - 0.005
    px, py = points[..., 0, None], points[..., 1, None]  # [edges, samples, 1]
    inside = (px > x_lo) & (px < x_hi) & (py > y_lo) & (py < y_hi) & boxes
    hit = inside.any(axis=1)  # [edges, nodes]
    hit[np.arange(len(edges)), layout.edge_src_node[edges]] = False
    hit[np.arange(len(edges)), layout.edge_dst_node[edges]] = False
    through = [
        (layout.edge_names[edges[e]], layout.node_names[n]) for e, n in zip(*np.nonzero(hit))
    ]
    assert not through, through[:5]


def test_skip_edges_of_one_column_are_told_apart():
    """a0.h0 -> logits and a10.h0 -> logits leave different rows and run in different lanes."""
    layout = layout_for(12, 12)
    names = {name: e for e, name in enumerate(layout.edge_names)}
    first, later = names["a0.h0->logits"], names["a10.h0->logits"]
    assert not np.isnan(layout.edge_route[[first, later], 2]).any()  # both use a gutter
    assert layout.edge_route[first, 2] != layout.edge_route[later, 2]  # in different lanes
    assert layout.edge_route[first, 1] < layout.edge_route[later, 1]
    gutters = layout.gutters
    assert np.abs(gutters - layout.edge_route[first, 2]).min() < 0.2  # inside a gutter


def test_layout_is_deterministic_and_read_only():
    graph = build_graph(2, 3)
    a, b = build_layout(graph), build_layout(graph)
    assert np.array_equal(a.edge_curves, b.edge_curves)
    assert np.array_equal(a.node_x, b.node_x)
    assert np.isfinite(a.edge_curves).all()
    with pytest.raises(ValueError):
        a.edge_curves[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        a.edge_route[0, 0] = 1.0


def test_layout_from_names_matches_the_torch_graph():
    """``layout_for`` needs only the shape (no torch); its edge order is the engine's."""
    for shape in [(12, 12, 12), (30, 9, 3)]:
        graph = build_graph(*shape)
        layout = layout_for(*shape)
        assert layout.edge_names == tuple(graph.edge_names())
        pairs = graph.edge_index().numpy()
        assert np.array_equal(layout.edge_src, pairs[:, 0])
        assert np.array_equal(layout.edge_dst, pairs[:, 1])


def test_gpt2_small_and_smollm2_sizes():
    layout = build_layout(build_graph(12, 12))
    assert layout.n_edges == 32491
    assert layout.n_nodes == 12 * 13 + 2
    smol = layout_for(30, 9, 3)
    assert smol.n_edges == 70651
    assert smol.n_nodes == 30 * (9 + 3 + 1) + 2  # heads, key/value groups, MLP per layer


def test_nearest_node_for_did_you_mean():
    layout = layout_for(4, 4)
    assert layout.nearest_node("a9.h9") == "a3.h3"
    assert layout.nearest_node("m12") == "m3"
    assert layout.nearest_node("a1.h2") == "a1.h2"
    assert layout.nearest_node("rubbish") == "input"
