"""Circuits as networkx DiGraphs, GraphML and GEXF: every circuit edge present with its score, and
networkx's own path search agrees with the circuit's dead-end pruning."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from circuitviz.graph.digraph import save_network, to_networkx
from circuitviz.graph.io import ScoredGraph
from circuitviz.graph.select import prune_dead_ends, top_n
from circuitviz.graph.topology import build_graph


def scored(n_kv_heads: int = 2, n: int = 30, seed: int = 0) -> ScoredGraph:
    graph = build_graph(3, 4, n_kv_heads)
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(graph.n_src, graph.n_dst, generator=gen).masked_fill(~graph.valid_mask, 0)
    return ScoredGraph(
        graph=graph, scores=scores, circuit=top_n(scores, graph, n), metadata={"task": "t"}
    )


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_every_circuit_edge_is_a_residual_edge_with_its_score(n_kv_heads):
    original = scored(n_kv_heads)
    network = to_networkx(original)
    residual = {(u, v): d for u, v, d in network.edges(data=True) if d["kind"] == "residual"}
    graph = original.graph
    expected = {}
    for name in original.circuit.edge_names():
        src, dst = name.split("->")
        i, j = graph.src_index()[src], graph.dst_index()[dst]
        expected[(src, dst)] = float(original.scores[i, j])
    assert {key: d["score"] for key, d in residual.items()} == expected
    ranks = sorted(d["rank"] for d in residual.values())
    assert ranks == list(range(1, len(expected) + 1))  # top-N by |score| holds ranks 1..N
    for u, v, d in network.edges(data=True):
        if d["kind"] == "internal":  # a reader feeds the head(s) of its query head or k/v group
            assert network.nodes[u]["kind"] == "reader" and network.nodes[v]["kind"] == "head"
            group = graph.n_heads // graph.n_kv_heads if network.nodes[u]["qkv"] != "q" else 1
            assert network.nodes[v]["head"] // group == network.nodes[u]["head"]
    assert network.graph["task"] == "t"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_networkx_paths_agree_with_dead_end_pruning(seed):
    original = scored(n=60, seed=seed)
    network = to_networkx(original)
    kept = set(prune_dead_ends(original.circuit).edge_names())
    for u, v, d in network.edges(data=True):
        if d["kind"] != "residual":
            continue
        on_path = (
            network.has_node("input")
            and network.has_node("logits")
            and nx.has_path(network, "input", u) | (u == "input")
            and nx.has_path(network, v, "logits") | (v == "logits")
        )
        assert on_path == (f"{u}->{v}" in kept), (u, v)


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_files_read_back_with_networkx(tmp_path, suffix):
    original = scored()
    path = save_network(tmp_path / f"circuit{suffix}", original)
    read = nx.read_graphml(path) if suffix == ".graphml" else nx.read_gexf(path)
    network = to_networkx(original)
    assert set(read.edges()) == set(network.edges())
    for u, v, d in network.edges(data=True):
        assert float(read.edges[u, v]["score"]) == pytest.approx(d["score"], rel=1e-6)
    with pytest.raises(ValueError, match=".graphml or .gexf"):
        save_network(tmp_path / "circuit.dot", original)


def test_all_edges_when_asked_with_circuit_membership():
    original = scored(n=10)
    network = to_networkx(original, only_circuit=False)
    residual = [d for _, _, d in network.edges(data=True) if d["kind"] == "residual"]
    assert len(residual) == original.graph.n_edges
    assert sum(d["in_circuit"] for d in residual) == 10


def test_discover_writes_a_network_file(tmp_path, capsys):
    import json

    from circuitviz.cli import main

    out = tmp_path / "circuit.graphml"
    argv = ["discover", "--model", "demo", "--attribution", "eap", "-n", "16", "--top-n", "40"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    read = nx.read_graphml(out)
    residual = [d for _, _, d in read.edges(data=True) if d["kind"] == "residual"]
    assert len(residual) == result["n_selected"] == 40 - result["n_dead_ends_removed"]
    assert nx.has_path(read, "input", "logits")


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_export_writes_a_runs_view_as_a_network(tmp_path, capsys, suffix):
    from circuitviz.cli import main
    from circuitviz.runs import RunStore

    out = tmp_path / f"view{suffix}"
    argv = ["export", "--run", "sv-disagreement-circuit", "--step", "after", "--top-n", "40"]
    assert main([*argv, "--out", str(out)]) == 0
    read = nx.read_graphml(out) if suffix == ".graphml" else nx.read_gexf(out)
    residual = [(u, v, d) for u, v, d in read.edges(data=True) if d["kind"] == "residual"]
    assert len(residual) == 40
    run = RunStore.default().open("sv-disagreement-circuit")
    after = run.snapshots().query("label == 'after'")["snapshot_id"].iloc[0]
    scores = dict(zip(run.edge_names(), run.snapshot(int(after)).scores))
    for u, v, d in residual:
        assert float(d["score"]) == pytest.approx(float(scores[f"{u}->{v}"]), rel=1e-3)
    assert sorted(int(d["rank"]) for _, _, d in residual) == list(range(1, 41))
