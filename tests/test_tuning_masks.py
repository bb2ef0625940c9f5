"""The node mask bank against the parameter map (its slow, obviously correct oracle)."""

import pytest
import torch

from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map, load_model
from circuitviz.tuning.masks import (
    build_mask_bank,
    full_finetune_params,
    layer0_qkv_nodes,
    tunable_nodes,
)


@pytest.fixture(scope="module", params=["random:gpt2-tiny", "random:llama-tiny"])
def setup(request):
    model = load_model(request.param, device="cpu")
    graph = graph_for(model.info)
    pmap = build_param_map(model, graph)
    return model, graph, pmap, build_mask_bank(pmap, graph)


def _random_nodes(bank, seed, p=0.3):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(bank.n_nodes, generator=generator) < p


def test_masks_and_counts_match_the_parameter_map(setup):
    _, _, pmap, bank = setup
    for seed in range(12):
        nodes = _random_nodes(bank, seed, p=0.05 + 0.08 * seed)
        names = [bank.node_names[i] for i in nodes.nonzero()[:, 0].tolist()]
        expected = pmap.masks_for(names)
        got = bank.masks(nodes)
        assert set(got) == set(expected)
        for name, mask in got.items():
            shape = pmap.params[name].shape
            full = torch.ones(shape, dtype=torch.bool) if mask is None else mask.full(shape)
            assert torch.equal(full, expected[name]), name
        assert bank.count(nodes) == pmap.count(names)


def test_empty_and_all_nodes(setup):
    _, _, pmap, bank = setup
    assert bank.masks(torch.zeros(bank.n_nodes, dtype=torch.bool)) == {}
    everything = bank.masks(torch.ones(bank.n_nodes, dtype=torch.bool))
    assert all(mask is None for mask in everything.values())
    assert bank.count(tunable_nodes(bank))["exact"] == pmap.count(list(pmap.owned))["exact"]
    assert 0 < bank.count(tunable_nodes(bank))["exact"] < bank.n_model_params


def test_nodes_of_edges_are_the_endpoints(setup):
    _, graph, _, bank = setup
    edge_mask = torch.zeros_like(graph.valid_mask)
    src_index, dst_index = graph.src_index(), graph.dst_index()
    edge_mask[src_index["input"], dst_index["a1.h0<q>"]] = True
    edge_mask[src_index["a0.h1"], dst_index["m1"]] = True
    nodes = bank.nodes_of_edges(edge_mask)
    names = {bank.node_names[i] for i in nodes.nonzero()[:, 0].tolist()}
    assert names == {"input", "a1.h0<q>", "a0.h1", "m1"}
    assert torch.equal(nodes, bank.nodes_of(names))


def test_layer0_qkv_nodes(setup):
    model, _, _, bank = setup
    names = {bank.node_names[i] for i in layer0_qkv_nodes(bank).nonzero()[:, 0].tolist()}
    n_heads, n_kv = model.info.n_heads, model.info.n_kv_heads
    assert len(names) == n_heads + 2 * n_kv
    assert all(name.startswith("a0.") and name.endswith((">",)) for name in names)


def test_full_finetune_params_skip_fused_views(setup):
    model, _, pmap, _ = setup
    names = full_finetune_params(pmap)
    if model.info.family == "gpt2":
        assert not any(name.endswith(("attn.qkv.weight", "attn.qkv.bias")) for name in names)
        assert "transformer.h.0.attn.q.weight" in names
        assert len(names) == len(pmap.params) - 2 * model.info.n_layers
    else:
        assert names == list(pmap.params)
