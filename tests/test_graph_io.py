"""Graph files: EAP-IG style JSON and safetensors both round-trip exactly."""

from __future__ import annotations

import json

import pytest
import torch

from circuitviz.graph.io import ScoredGraph, load_graph, save_graph
from circuitviz.graph.select import empty_circuit, top_n
from circuitviz.graph.topology import build_graph


def scored_graph(paper: bool = False, n_kv_heads: int = 2) -> ScoredGraph:
    graph = build_graph(2, 4, n_kv_heads, paper=paper)
    gen = torch.Generator().manual_seed(0)
    # Scores spanning many magnitudes, so a lossy text format would show.
    scores = torch.randn(graph.n_src, graph.n_dst, generator=gen) * 10.0 ** torch.randint(
        -9, 4, (graph.n_src, graph.n_dst), generator=gen
    )
    scores = scores.float().masked_fill(~graph.valid_mask, 0.0)
    return ScoredGraph(
        graph=graph,
        scores=scores,
        circuit=top_n(scores, graph, 23),
        metadata={
            "model": "random:llama-tiny",
            "task": "sv-agreement",
            "sign": "m(patched)-m(clean)",
        },
        d_model=32,
    )


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
@pytest.mark.parametrize("paper", [False, True])
def test_round_trip_is_exact(tmp_path, suffix, paper):
    original = scored_graph(paper=paper)
    loaded = load_graph(save_graph(tmp_path / f"graph{suffix}", original))
    assert loaded.graph.src_names == original.graph.src_names
    assert loaded.graph.dst_names == original.graph.dst_names
    assert loaded.graph.paper == paper
    assert torch.equal(loaded.scores, original.scores)
    assert torch.equal(loaded.circuit.edge_mask, original.circuit.edge_mask)
    assert loaded.metadata == original.metadata
    assert loaded.d_model == 32


def test_json_has_the_eap_ig_layout(tmp_path):
    original = scored_graph()
    payload = json.loads(save_graph(tmp_path / "g.json", original).read_text())
    assert set(payload) >= {"cfg", "nodes", "edges"}
    assert payload["cfg"]["n_layers"] == 2 and payload["cfg"]["n_heads"] == 4
    assert len(payload["edges"]) == original.graph.n_edges
    assert sum(e["in_graph"] for e in payload["edges"].values()) == 23
    assert set(payload["nodes"]) == {"input", "logits", "m0", "m1"} | {
        f"a{layer}.h{head}" for layer in range(2) for head in range(4)
    }
    assert payload["nodes"] == {
        name: {"in_graph": flag} for name, flag in original.circuit.node_mask().items()
    }
    assert "a0.h1->a1.h3<q>" in payload["edges"] and "input->a0.h1<k>" in payload["edges"]


def test_a_plain_eap_ig_file_loads(tmp_path):
    """Files written by EAP-IG carry no n_kv_heads or paper_graph; the defaults fill them in."""
    edges = {
        "input->a0.h0<q>": {"score": 0.5, "in_graph": True},
        "m1->logits": {"score": -2.0, "in_graph": False},
    }
    payload = {
        "cfg": {"n_layers": 2, "n_heads": 4, "d_model": 32},
        "nodes": {"input": True},
        "edges": edges,
    }
    path = tmp_path / "eap_ig.json"
    path.write_text(json.dumps(payload))
    loaded = load_graph(path)
    assert loaded.graph.n_kv_heads == 4 and not loaded.graph.paper
    assert loaded.circuit.edge_names() == ["input->a0.h0<q>"]
    assert float(loaded.scores[loaded.graph.src_index()["m1"], -1]) == -2.0


def test_a_file_in_the_references_own_layout_round_trips(tmp_path):
    """The layout EAP-IG's ``Graph.to_json`` writes and its ``from_json`` (which MIB uses) reads:
    every node as ``{"in_graph": bool}``, cfg with n_layers, n_heads, parallel_attn_mlp and
    d_model. Reading it and writing it back gives the same nodes, edges and scores."""
    graph = build_graph(2, 3)
    gen = torch.Generator().manual_seed(7)
    names = graph.edge_names()
    values = torch.randn(len(names), generator=gen).tolist()
    kept = {name for name, value in zip(names, values) if abs(value) > 1.0}
    nodes_on = {"input", "logits"} | {part.split("<")[0] for e in kept for part in e.split("->")}
    base_names = ["input"]
    for layer in range(2):
        base_names += [f"a{layer}.h{head}" for head in range(3)] + [f"m{layer}"]
    base_names.append("logits")
    reference = {
        "cfg": {"n_layers": 2, "n_heads": 3, "parallel_attn_mlp": False, "d_model": 16},
        "nodes": {name: {"in_graph": name in nodes_on} for name in base_names},
        "edges": {
            name: {"score": value, "in_graph": name in kept} for name, value in zip(names, values)
        },
    }
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(reference))
    loaded = load_graph(path)
    assert set(loaded.circuit.edge_names()) == kept
    again = json.loads(save_graph(tmp_path / "again.json", loaded).read_text())
    assert again["edges"].keys() == reference["edges"].keys()
    for name, entry in reference["edges"].items():
        assert again["edges"][name]["in_graph"] == entry["in_graph"]
        assert again["edges"][name]["score"] == torch.tensor(entry["score"]).float().item()
    for name, entry in again["nodes"].items():
        assert set(entry) == {"in_graph"} and isinstance(entry["in_graph"], bool)
        if name not in ("input", "logits"):
            assert entry["in_graph"] == reference["nodes"][name]["in_graph"]
    assert {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"} <= set(again["cfg"])


def test_bad_files_fail_with_the_reason(tmp_path):
    payload = {"cfg": {"n_layers": 2, "n_heads": 4}, "edges": {"m1->a0.h0<q>": {"score": 1.0}}}
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="not an edge of the graph"):
        load_graph(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="use .json"):
        save_graph(tmp_path / "g.csv", scored_graph())
    with pytest.raises(ValueError, match="no such graph file"):
        load_graph(tmp_path / "missing.json")
    graph = build_graph(2, 4)
    with pytest.raises(ValueError, match="float32"):
        ScoredGraph(
            graph=graph,
            scores=torch.zeros(graph.n_src, graph.n_dst, dtype=torch.float64),
            circuit=empty_circuit(graph),
        )
