"""MLP neuron groups as graph nodes (``m{L}.g{j}``): names and graph, the per-group forward, EAP
against the finite-difference oracle (GPT-2 and Llama shapes, float64), the parameter map by
perturbation, and the mask bank and masked optimizer at group granularity."""

from __future__ import annotations

import pytest
import torch
from support.batches import random_batch

from circuitviz.attribution import (
    AttributionConfig,
    batch_edge_scores,
    edge_derivatives,
    edge_effects,
    run_with_ablated_edges,
)
from circuitviz.attribution.activations import baseline_activations
from circuitviz.attribution.hooks import dest_hooks, input_hooks
from circuitviz.graph.names import parse_node
from circuitviz.graph.select import Circuit, empty_circuit, prune_dead_ends
from circuitviz.graph.topology import build_graph, graph_for
from circuitviz.models import build_param_map
from circuitviz.models.mlp import build_mlp_groups
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.masks import build_mask_bank
from circuitviz.tuning.optim import MaskedOptimizer

G = 4


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2):
    return tiny_gpt2 if request.param == "gpt2" else request.getfixturevalue("float64_llama")


# --- names and graph -------------------------------------------------------------------------------


def test_group_names_parse_and_format():
    ref = parse_node("m3.g7")
    assert (ref.kind, ref.layer, ref.group, ref.head, ref.base) == ("mlp", 3, 7, None, "m3.g7")
    assert parse_node("m3").group is None and parse_node("m3").base == "m3"
    for bad in ("m3.g", "m3.h1", "m.g1", "m3.g1<q>"):
        with pytest.raises(ValueError, match="not a node name"):
            parse_node(bad)


@pytest.mark.parametrize("paper", [False, True])
def test_group_graph_splits_every_mlp_edge(paper):
    whole = build_graph(3, 4, 2, paper=paper)
    grouped = build_graph(3, 4, 2, paper=paper, mlp_groups=G)
    assert grouped.n_src == whole.n_src + 3 * (G - 1)
    assert grouped.n_dst == whole.n_dst + 3 * (G - 1)
    # Every whole-graph edge becomes one edge per group at each MLP end.
    src_mlp = torch.tensor([parse_node(n).kind == "mlp" for n in whole.src_names])
    dst_mlp = torch.tensor([parse_node(n).kind == "mlp" for n in whole.dst_names])
    multiplicity = (1 + (G - 1) * src_mlp.long())[:, None] * (1 + (G - 1) * dst_mlp.long())[None]
    assert grouped.n_edges == int((multiplicity * whole.valid_mask).sum())
    # Groups of one layer never read one another; a group reads what its whole MLP reads.
    src, dst = grouped.src_index(), grouped.dst_index()
    assert not grouped.valid_mask[src["m1.g0"], dst["m1.g1"]]
    assert grouped.valid_mask[src["m0.g3"], dst["m1.g0"]]
    assert grouped.valid_mask[src["a1.h2"], dst["m1.g2"]]
    assert grouped.describe()["mlp_groups"] == G
    assert build_graph(3, 4, 2, paper=paper).src_names == whole.src_names  # default unchanged


def test_groups_must_divide_the_mlp_width(tiny_gpt2):
    with pytest.raises(ValueError, match=r"does not divide the MLP width 128; choose one of"):
        graph_for(tiny_gpt2.info, mlp_groups=5)
    with pytest.raises(ValueError, match="mlp_groups must be"):
        build_graph(2, 4, mlp_groups=0)


def test_dead_end_pruning_follows_a_group_through_its_own_output():
    graph = build_graph(2, 2, mlp_groups=2)
    src, dst = graph.src_index(), graph.dst_index()
    edges = torch.zeros_like(graph.valid_mask)
    edges[src["input"], dst["m0.g1"]] = True
    edges[src["m0.g1"], dst["logits"]] = True  # a path through group 1
    edges[src["m0.g0"], dst["logits"]] = True  # group 0 reads nothing: a dead end
    kept = prune_dead_ends(Circuit.from_edge_mask(graph, edges))
    assert set(kept.edge_names()) == {"input->m0.g1", "m0.g1->logits"}


def test_circuit_files_keep_the_groups(tmp_path):
    from circuitviz.graph.io import ScoredGraph, load_graph, save_graph
    from circuitviz.graph.select import top_n

    graph = build_graph(2, 2, mlp_groups=3)
    scores = torch.randn(graph.n_src, graph.n_dst, generator=torch.Generator().manual_seed(0))
    scores = (scores * graph.valid_mask).float()
    scored = ScoredGraph(graph=graph, scores=scores, circuit=top_n(scores, graph, 5))
    for suffix in (".json", ".safetensors"):
        back = load_graph(save_graph(tmp_path / f"circuit{suffix}", scored))
        assert back.graph.mlp_groups == 3 and back.graph.src_names == graph.src_names
        assert torch.equal(back.scores, scores)
        assert back.circuit.edge_names() == scored.circuit.edge_names()


# --- the per-group forward -----------------------------------------------------------------------


def test_group_contributions_sum_to_the_mlp_output(model):
    groups = build_mlp_groups(model, G)
    kept = {}
    hooks = [
        ("blocks.1.mlp.hook_post", lambda x, hook: kept.__setitem__("hidden", x.clone())),
        ("blocks.1.mlp.hook_out", lambda x, hook: kept.__setitem__("out", x.clone())),
    ]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(random_batch().clean_ids)
    parts = groups.contributions(1, kept["hidden"])  # [group, batch, pos, d_model]
    assert parts.shape[0] == G
    pmap = build_param_map(model, graph_for(model.info))
    bias = pmap.params.get("transformer.h.1.mlp.c_proj.bias", torch.zeros(()))
    torch.testing.assert_close(parts.sum(0) + bias, kept["out"], rtol=1e-10, atol=1e-12)
    assert all(float(part.detach().abs().max()) > 0 for part in parts)


def test_per_group_input_copies_leave_the_forward_unchanged(model):
    graph = graph_for(model.info, mlp_groups=G)
    batch = random_batch()
    hooks = []
    for spec in dest_hooks(graph, model):
        if spec.groups is not None:
            hooks += input_hooks(spec, lambda copies: copies)
    assert len(hooks) >= 2 * model.info.n_layers
    with torch.no_grad():
        plain = model.bridge(batch.clean_ids, attention_mask=batch.attention_mask)
        with model.bridge.hooks(fwd_hooks=hooks):
            split = model.bridge(batch.clean_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(split, plain, rtol=1e-10, atol=1e-12)


# --- EAP against the oracle ------------------------------------------------------------------------


def _group_edges(graph) -> list[tuple[int, int]]:
    """Every valid edge with an MLP group at either end."""
    return [
        (i, j)
        for i, j in graph.edge_index().tolist()
        if ".g" in graph.src_names[i] or ".g" in graph.dst_names[j]
    ]


@pytest.mark.parametrize(
    ("baseline", "positions"), [("corrupted", "all"), ("mean", "all"), ("zero", "target")]
)
def test_group_scores_equal_finite_differences(model, baseline, positions):
    graph = graph_for(model.info, mlp_groups=G)
    batch = random_batch()
    config = AttributionConfig(method="eap", baseline=baseline, positions=positions)
    result = batch_edge_scores(model, graph, batch, config)
    edges = _group_edges(graph)
    index = torch.tensor(edges)
    scores = (result.scores / result.n_examples)[index[:, 0], index[:, 1]]
    oracle = edge_derivatives(model, graph, batch, config, edges, eps=1e-4)
    assert oracle.abs().max() > 1e-4
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-4 * float(oracle.abs().max()))


@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "eap-ig-activations"])
def test_group_scores_add_up_to_whole_mlp_scores(model, method):
    """Groups split the MLP's output (its bias aside) and its input gradient exactly, so summing
    group scores gives the whole-MLP graph's scores, also along EAP-IG's pinned paths."""
    config = AttributionConfig(method=method, baseline="corrupted", positions="all", ig_steps=3)
    batch = random_batch(seed=3)
    whole_graph = graph_for(model.info)
    grouped_graph = graph_for(model.info, mlp_groups=G)
    whole = batch_edge_scores(model, whole_graph, batch, config).scores
    grouped = batch_edge_scores(model, grouped_graph, batch, config).scores

    # Sum group rows and columns back into their MLP: the scores of the whole-MLP graph.
    def merge(names, whole_names):
        index = {name: i for i, name in enumerate(whole_names)}
        out = torch.zeros(len(whole_names), len(names), dtype=torch.float64)
        for j, name in enumerate(names):
            ref = parse_node(name)
            base = f"m{ref.layer}" if ref.group is not None else name
            out[index[base], j] = 1.0
        return out

    to_src = merge(grouped_graph.src_names, whole_graph.src_names)
    to_dst = merge(grouped_graph.dst_names, whole_graph.dst_names)
    torch.testing.assert_close(to_src @ grouped @ to_dst.T, whole, rtol=1e-8, atol=1e-12)


def test_group_eap_ig_pins_groups_and_approaches_exact_patching(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info, mlp_groups=G)
    batch = random_batch(n=6, n_pos=7, seed=1)
    edges = _group_edges(graph)
    index = torch.tensor(edges)
    exact = edge_effects(tiny_gpt2, graph, batch, AttributionConfig(), edges)

    def error(method: str, steps: int) -> float:
        result = batch_edge_scores(
            tiny_gpt2, graph, batch, AttributionConfig(method=method, ig_steps=steps)
        )
        scores = (result.scores / result.n_examples)[index[:, 0], index[:, 1]]
        return float((scores - exact).norm() / exact.norm())

    eap = error("eap", 1)
    assert eap > 0.02
    assert error("eap-ig-activations", 16) < 0.6 * eap
    assert error("eap-ig-inputs", 16) < 0.6 * eap


def test_ablating_every_group_edge_reproduces_the_corrupted_run(model):
    graph = graph_for(model.info, mlp_groups=G)
    batch = random_batch()
    base = baseline_activations(model, graph, batch, "corrupted")
    logits = run_with_ablated_edges(model, graph, batch, empty_circuit(graph), base)
    with torch.no_grad():
        corrupted = model.bridge(batch.corrupt_ids, attention_mask=batch.attention_mask)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(logits[real], corrupted[real], rtol=1e-8, atol=1e-10)


# --- parameters: the map, the mask bank, the optimizer ---------------------------------------------


def _hidden_and_parts(model, groups, layer=1):
    kept = {}

    def keep(x, hook):
        kept["hidden"] = x.detach().clone()

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", keep)]):
        model.bridge(random_batch().clean_ids)
    return kept["hidden"], groups.contributions(layer, kept["hidden"])


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_a_group_owns_exactly_its_neurons(request, fixture):
    model = request.getfixturevalue(fixture)
    graph = graph_for(model.info, mlp_groups=G)
    pmap = build_param_map(model, graph)
    groups = build_mlp_groups(model, G)
    size = model.info.d_mlp // G
    hidden0, parts0 = _hidden_and_parts(model, groups)
    backup = {name: p.detach().clone() for name, p in pmap.params.items()}
    try:
        with torch.no_grad():
            for name, mask in pmap.masks_for(["m1.g2"]).items():
                if name.endswith(("c_proj.bias", "down_proj.bias")):
                    continue  # the output bias is shared by every group
                pmap.params[name].add_(mask * torch.randn_like(pmap.params[name]))
        hidden1, parts1 = _hidden_and_parts(model, groups)
    finally:
        with torch.no_grad():
            for name, value in backup.items():
                pmap.params[name].copy_(value)
    neurons = (hidden1 - hidden0).abs().amax(dim=(0, 1)) > 1e-12
    assert neurons.nonzero().flatten().tolist() == list(range(2 * size, 3 * size))
    changed = (parts1 - parts0).abs().amax(dim=(1, 2, 3)) > 1e-12
    assert changed.nonzero().flatten().tolist() == [2]
    # Nothing of another layer, and every owned tensor is an MLP tensor of layer 1.
    assert all(".1.mlp." in piece.name for piece in pmap.slices_for(["m1.g2"]))


def test_group_counts(tiny_gpt2):
    pmap = build_param_map(tiny_gpt2, graph_for(tiny_gpt2.info, mlp_groups=G))
    d_model, size = tiny_gpt2.info.d_model, tiny_gpt2.info.d_mlp // G
    # c_fc columns and bias entries, c_proj rows, and the shared c_proj bias.
    assert pmap.count(["m0.g1"])["exact"] == d_model * size + size + size * d_model + d_model
    whole = build_param_map(tiny_gpt2, graph_for(tiny_gpt2.info)).count(["m0"])["exact"]
    assert pmap.count([f"m0.g{j}" for j in range(G)])["exact"] == whole


@pytest.mark.parametrize("spec", ["random:gpt2-tiny", "random:llama-tiny"])
def test_mask_bank_and_optimizer_freeze_at_group_granularity(spec):
    from circuitviz.models import load_model

    model = load_model(spec, device="cpu", dtype="float64", seed=2)
    graph = graph_for(model.info, mlp_groups=G)
    pmap = build_param_map(model, graph)
    bank = build_mask_bank(pmap, graph)
    for seed in range(6):
        nodes = torch.rand(bank.n_nodes, generator=torch.Generator().manual_seed(seed)) < 0.3
        names = [bank.node_names[i] for i in nodes.nonzero()[:, 0].tolist()]
        expected = pmap.masks_for(names)
        got = bank.masks(nodes)
        assert set(got) == set(expected)
        for name, mask in got.items():
            shape = pmap.params[name].shape
            full = torch.ones(shape, dtype=torch.bool) if mask is None else mask.full(shape)
            assert torch.equal(full, expected[name]), name
        assert bank.count(nodes) == pmap.count(names)

    # One SGD step with momentum and weight decay moves only group 2 of layer 1.
    masks = bank.masks(bank.nodes_of(["m1.g2"]))
    params = {name: pmap.params[name] for name in bank.param_names}
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = MaskedOptimizer(params, TuneConfig(lr=0.1, momentum=0.9, weight_decay=0.1))
    ids = random_batch().clean_ids
    for _ in range(2):
        optimizer.zero_grad()
        logits = model.bridge(ids)
        logits.logsumexp(-1).mean().backward()
        optimizer.step(masks, 0.1)
    expected = pmap.masks_for(["m1.g2"])
    for name, param in params.items():
        moved = param.detach() != before[name]
        allowed = expected.get(name, torch.zeros_like(moved))
        assert not bool((moved & ~allowed).any()), name
    assert any(bool((params[name].detach() != before[name]).any()) for name in expected)
    model.bridge.zero_grad(set_to_none=True)


def test_head_change_rows_carry_the_group(tiny_gpt2):
    from circuitviz.tuning.records import HeadChangeMeter

    graph = graph_for(tiny_gpt2.info, mlp_groups=G)
    pmap = build_param_map(tiny_gpt2, graph)
    meter = HeadChangeMeter(build_mask_bank(pmap, graph), pmap.params)
    mlp_rows = [(row["layer"], row["head"]) for row in meter.rows_now() if row["kind"] == "mlp"]
    assert sorted(mlp_rows) == [(layer, g) for layer in range(2) for g in range(G)]
