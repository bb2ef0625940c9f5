"""The fixed layered layout: every box placed once, every edge from a writer's top to a reader's
bottom, q/k/v into their head's box, input below everything and logits above."""

import numpy as np
import pytest

from circuitviz.graph.topology import build_graph, parse_edge, parse_node
from circuitviz.plotting.layout import BOX_H, QKV_OFFSET, build_layout


@pytest.fixture(scope="module", params=[(3, 4, 4, False), (2, 4, 2, False), (3, 2, 2, True)])
def graph_and_layout(request):
    n_layers, n_heads, n_kv, paper = request.param
    graph = build_graph(n_layers, n_heads, n_kv, paper=paper)
    return graph, build_layout(graph)


def test_one_box_per_base_node(graph_and_layout):
    graph, layout = graph_and_layout
    bases = {parse_node(n, graph.n_layers).base for n in graph.src_names + graph.dst_names}
    assert set(layout.node_names) == bases
    assert len(layout.node_names) == len(bases)
    assert layout.n_edges == graph.n_edges
    assert layout.edge_names == tuple(graph.edge_names())


def test_edges_run_from_writer_top_to_reader_bottom(graph_and_layout):
    graph, layout = graph_and_layout
    index = layout.node_index()
    group = graph.n_heads // graph.n_kv_heads
    for e, name in enumerate(layout.edge_names):
        src, dst = parse_edge(name)
        s_ref, d_ref = parse_node(src, graph.n_layers), parse_node(dst, graph.n_layers)
        s_box = index[s_ref.base]
        head = d_ref.head if d_ref.qkv in (None, "q") else d_ref.head * group
        d_box = index[d_ref.base if d_ref.kind != "head" else f"a{d_ref.layer}.h{head}"]
        assert layout.edge_src_node[e] == s_box and layout.edge_dst_node[e] == d_box
        start, end = layout.edge_curves[e, 0], layout.edge_curves[e, -1]
        assert start[1] == pytest.approx(layout.node_y[s_box] + BOX_H / 2, abs=1e-5)
        assert end[1] == pytest.approx(layout.node_y[d_box] - BOX_H / 2, abs=1e-5)
        if d_ref.kind == "head":  # q left, k middle, v right inside the head's box
            expected_x = layout.node_x[d_box] + QKV_OFFSET[d_ref.qkv] * 0.8
            assert end[0] == pytest.approx(expected_x, abs=1e-5)
        assert end[1] > start[1], f"{name} does not go upward"


def test_input_at_the_bottom_logits_on_top(graph_and_layout):
    graph, layout = graph_and_layout
    names = list(layout.node_names)
    heads = [i for i, k in enumerate(layout.node_kind) if k == "head"]
    if graph.paper:
        assert "input" not in names and "logits" not in names
        return
    assert layout.node_y[names.index("input")] < layout.node_y[heads].min()
    assert layout.node_y[names.index("logits")] > layout.node_y.max() - 1e-9
    # Heads of one layer share a row, left to right by head index.
    for layer in range(graph.n_layers):
        row = [i for i in heads if layout.node_layer[i] == layer]
        assert np.all(np.diff(layout.node_x[row]) > 0)
        assert len(set(layout.node_y[row].tolist())) == 1


def test_layout_is_deterministic_and_read_only():
    graph = build_graph(2, 3)
    a, b = build_layout(graph), build_layout(graph)
    assert np.array_equal(a.edge_curves, b.edge_curves)
    assert np.array_equal(a.node_x, b.node_x)
    assert np.isfinite(a.edge_curves).all()
    with pytest.raises(ValueError):
        a.edge_curves[0, 0, 0] = 1.0


def test_gpt2_small_size():
    layout = build_layout(build_graph(12, 12))
    assert layout.n_edges == 32491
    assert layout.n_nodes == 12 * 13 + 2
