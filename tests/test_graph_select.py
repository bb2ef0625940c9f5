"""Circuit selection: invariants, and each vectorised rule against a slow, obviously correct loop."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from circuitviz.graph.select import (
    Circuit,
    empty_circuit,
    full_circuit,
    node_weighted,
    prune_dead_ends,
    random_circuit,
    threshold,
    top_n,
)
from circuitviz.graph.topology import build_graph, parse_node


@pytest.fixture(params=[(3, 4, 4), (2, 4, 2)], ids=["mha", "gqa"])
def graph(request):
    return build_graph(*request.param)


def random_scores(graph, seed: int = 0) -> torch.Tensor:
    scores = torch.randn(graph.n_src, graph.n_dst, generator=torch.Generator().manual_seed(seed))
    return scores.masked_fill(~graph.valid_mask, 1e6)  # invalid cells must never be chosen


def assert_node_masks_agree(circuit: Circuit) -> None:
    assert torch.equal(circuit.src_mask, circuit.edge_mask.any(1))
    assert torch.equal(circuit.dst_mask, circuit.edge_mask.any(0))
    nodes = set(circuit.nodes())
    for name in circuit.edge_names():
        src, dst = name.split("->")
        assert parse_node(src).base in nodes and parse_node(dst).base in nodes


def test_top_n_keeps_exactly_n_valid_edges_and_leaves_scores_alone(graph):
    scores = random_scores(graph)
    before = scores.clone()
    magnitude = scores.abs()[graph.valid_mask].sort(descending=True).values
    for n in (0, 1, 17, graph.n_edges):
        circuit = top_n(scores, graph, n)
        assert circuit.n_edges == n
        assert not bool((circuit.edge_mask & ~graph.valid_mask).any())
        if 0 < n < graph.n_edges:
            kept = scores.abs()[circuit.edge_mask]
            assert float(kept.min()) == float(magnitude[n - 1])
        assert_node_masks_agree(circuit)
    assert torch.equal(scores, before)
    with pytest.raises(ValueError, match="only"):
        top_n(scores, graph, graph.n_edges + 1)
    with pytest.raises(ValueError, match="non-negative"):
        top_n(scores, graph, -1)


def test_top_n_signed_prefers_large_positive_scores(graph):
    scores = torch.zeros(graph.n_src, graph.n_dst)
    i, j = graph.edge_index()[3].tolist()
    k, m = graph.edge_index()[5].tolist()
    scores[i, j], scores[k, m] = -5.0, 2.0
    assert top_n(scores, graph, 1).edge_mask[i, j]
    assert top_n(scores, graph, 1, absolute=False).edge_mask[k, m]


def test_thresholds_are_monotone_and_match_top_n(graph):
    scores = random_scores(graph, seed=1)
    previous = full_circuit(graph).edge_mask
    for value in (0.0, 0.1, 0.5, 1.0, 2.0, 10.0):
        circuit = threshold(scores, graph, value)
        assert not bool((circuit.edge_mask & ~previous).any())
        assert_node_masks_agree(circuit)
        previous = circuit.edge_mask
    nth = float(scores.abs()[graph.valid_mask].sort(descending=True).values[9])
    assert torch.equal(threshold(scores, graph, nth).edge_mask, top_n(scores, graph, 10).edge_mask)


def test_node_weighted_matches_a_loop_over_edges(graph):
    scores = random_scores(graph, seed=2)
    valid = graph.valid_mask
    out_total = [
        sum(abs(float(scores[i, j])) for j in range(graph.n_dst) if valid[i, j])
        for i in range(graph.n_src)
    ]
    in_total = [
        sum(abs(float(scores[i, j])) for i in range(graph.n_src) if valid[i, j])
        for j in range(graph.n_dst)
    ]
    weights = {
        (i, j): abs(float(scores[i, j])) * out_total[i] * in_total[j]
        for i, j in graph.edge_index().tolist()
    }
    expected = sorted(weights, key=weights.get, reverse=True)[:25]
    circuit = node_weighted(scores, graph, 25)
    assert set(map(tuple, circuit.edge_mask.nonzero().tolist())) == set(expected)
    assert circuit.n_edges == 25
    assert_node_masks_agree(circuit)


def path_oracle(circuit: Circuit, from_input: bool = True) -> torch.Tensor:
    """Edges on an input -> logits path (``from_input`` off: on any path to logits), found by
    networkx on a node-level graph: an edge for every circuit edge, plus reader -> writer inside
    each node (a k/v group reaches each head it serves)."""
    graph = circuit.graph
    group = graph.n_heads // graph.n_kv_heads
    g = nx.DiGraph()
    for name in graph.src_names:
        g.add_node(("src", name))
    for name in graph.dst_names:
        ref = parse_node(name, graph.n_layers)
        if ref.kind == "mlp":
            g.add_edge(("dst", name), ("src", name))
        elif ref.qkv == "q":
            g.add_edge(("dst", name), ("src", ref.base))
        elif ref.qkv in ("k", "v"):
            for h in range(ref.head * group, (ref.head + 1) * group):
                g.add_edge(("dst", name), ("src", f"a{ref.layer}.h{h}"))
    for i, j in circuit.edge_mask.nonzero().tolist():
        g.add_edge(("src", graph.src_names[i]), ("dst", graph.dst_names[j]))
    start, end = ("src", "input"), ("dst", "logits")
    g.add_node(end)
    fed = (nx.descendants(g, start) | {start}) if from_input else set(g.nodes)
    to_logits = nx.ancestors(g, end) | {end}
    keep = torch.zeros_like(circuit.edge_mask)
    for i, j in circuit.edge_mask.nonzero().tolist():
        keep[i, j] = ("src", graph.src_names[i]) in fed and (
            "dst",
            graph.dst_names[j],
        ) in to_logits
    return keep


@pytest.mark.parametrize("from_input", [True, False], ids=["input-to-logits", "to-logits"])
@pytest.mark.parametrize("n", [5, 20, 60])
def test_prune_dead_ends_matches_path_search(graph, n, from_input):
    kept, dropped = 0, 0
    for seed in range(3):
        circuit = random_circuit(graph, n, seed=seed)
        pruned = prune_dead_ends(circuit, from_input=from_input)
        assert torch.equal(pruned.edge_mask, path_oracle(circuit, from_input))
        assert_node_masks_agree(pruned)
        again = prune_dead_ends(pruned, from_input=from_input)
        assert torch.equal(again.edge_mask, pruned.edge_mask)
        kept, dropped = kept + pruned.n_edges, dropped + circuit.n_edges - pruned.n_edges
    if n == 60:  # the check is not vacuous: some edges stay, some go
        assert kept > 0 and dropped > 0


def test_prune_keeps_a_path_through_a_shared_key_value_group():
    graph = build_graph(2, 4, 2)
    src, dst = graph.src_index(), graph.dst_index()
    mask = torch.zeros_like(graph.valid_mask)
    mask[src["input"], dst["a0.h1<k>"]] = True  # group 1 serves heads 2 and 3
    mask[src["a0.h3"], dst["logits"]] = True
    mask[src["a0.h0"], dst["logits"]] = True  # head 0 reads nothing in the circuit: a dead end
    pruned = prune_dead_ends(Circuit.from_edge_mask(graph, mask))
    assert pruned.edge_names() == ["input->a0.h1<k>", "a0.h3->logits"]


def test_paper_graph_has_no_dead_ends():
    graph = build_graph(2, 4, paper=True)
    circuit = random_circuit(graph, 10, seed=0)
    assert torch.equal(prune_dead_ends(circuit).edge_mask, circuit.edge_mask)


def test_random_circuit_is_seeded_and_sized(graph):
    a, b = random_circuit(graph, 30, seed=7), random_circuit(graph, 30, seed=7)
    assert torch.equal(a.edge_mask, b.edge_mask) and a.n_edges == 30
    assert not torch.equal(a.edge_mask, random_circuit(graph, 30, seed=8).edge_mask)


def test_circuit_rejects_invalid_edges_and_disagreeing_node_masks(graph):
    bad = torch.zeros_like(graph.valid_mask)
    bad[~graph.valid_mask] = True
    with pytest.raises(ValueError, match="invalid edge"):
        Circuit.from_edge_mask(graph, bad)
    empty = empty_circuit(graph)
    with pytest.raises(ValueError, match="disagree"):
        Circuit(
            graph=graph,
            edge_mask=empty.edge_mask,
            src_mask=torch.ones_like(empty.src_mask),
            dst_mask=empty.dst_mask,
        )
    node_mask = full_circuit(graph).node_mask()
    assert all(node_mask.values()) and not any(empty.node_mask().values())
