"""Exact freezing: the masked optimizer against plain torch.optim and against bit-identity."""

import pytest
import torch

from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map, load_model
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.masks import build_mask_bank, full_finetune_params, tunable_nodes
from circuitviz.tuning.optim import MaskedOptimizer, build_torch_optimizer, lr_at

OPTIMIZERS = [
    TuneConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.1),
    TuneConfig(optimizer="adamw", lr=0.01, weight_decay=0.1),
]


def _setup(spec="random:gpt2-tiny"):
    model = load_model(spec, device="cpu", dtype="float64", seed=3)
    graph = graph_for(model.info)
    pmap = build_param_map(model, graph)
    return model, pmap, build_mask_bank(pmap, graph)


def _ids(step, batch=4, pos=10):
    return torch.randint(0, 200, (batch, pos), generator=torch.Generator().manual_seed(step))


def _backward(model, step):
    ids = _ids(step)
    logits = model.bridge(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()


@pytest.mark.parametrize("config", OPTIMIZERS, ids=["sgd", "adamw"])
def test_all_ones_circuit_equals_plain_finetuning(config):
    model_a, pmap_a, bank_a = _setup()
    model_b, pmap_b, _ = _setup()
    names = list(bank_a.param_names)
    masked = MaskedOptimizer({n: pmap_a.params[n] for n in names}, config)
    plain = build_torch_optimizer([pmap_b.params[n] for n in names], config)
    masks = bank_a.masks(tunable_nodes(bank_a))
    assert all(mask is None for mask in masks.values())
    for step in range(1, 6):
        masked.zero_grad()
        plain.zero_grad(set_to_none=True)
        _backward(model_a, step)
        _backward(model_b, step)
        masked.step(masks, lr_at(step, config))
        plain.step()
        for name in names:
            assert torch.equal(pmap_a.params[name], pmap_b.params[name]), (step, name)


@pytest.mark.parametrize("config", OPTIMIZERS, ids=["sgd", "adamw"])
@pytest.mark.parametrize("spec", ["random:gpt2-tiny", "random:llama-tiny"])
def test_frozen_entries_stay_bit_identical_with_a_changing_circuit(config, spec):
    model, pmap, bank = _setup(spec)
    names = list(bank.param_names)
    optimizer = MaskedOptimizer({n: pmap.params[n] for n in names}, config)
    generator = torch.Generator().manual_seed(0)
    moved = {name: torch.zeros_like(pmap.params[name], dtype=torch.bool) for name in names}
    for step in range(1, 16):
        nodes = torch.rand(bank.n_nodes, generator=generator) < 0.3
        masks = bank.masks(nodes)
        before = {name: pmap.params[name].detach().clone() for name in names}
        optimizer.zero_grad()
        _backward(model, step)
        optimizer.step(masks, config.lr)
        for name in names:
            param = pmap.params[name]
            if name not in masks:
                assert torch.equal(param, before[name]), (step, name)
                continue
            mask = masks[name]
            trainable = torch.ones_like(param, dtype=torch.bool)
            if mask is not None:
                trainable = mask.full(param.shape)
            assert torch.equal(param[~trainable], before[name][~trainable]), (step, name)
            moved[name] |= param != before[name]
    # The test can fail the other way too: trainable entries did move over the run.
    assert sum(int(m.sum()) for m in moved.values()) > 0.5 * sum(m.numel() for m in moved.values())


@pytest.mark.parametrize("config", OPTIMIZERS, ids=["sgd", "adamw"])
def test_first_step_on_a_partial_tensor_matches_plain_step_on_its_rows(config):
    """Oracle: with fresh state, the selected rows move exactly as a plain full step moves them."""
    model_a, pmap_a, bank_a = _setup()
    model_b, pmap_b, _ = _setup()
    names = list(bank_a.param_names)
    masked = MaskedOptimizer({n: pmap_a.params[n] for n in names}, config)
    plain = build_torch_optimizer([pmap_b.params[n] for n in names], config)
    masks = bank_a.masks(bank_a.nodes_of(["a1.h2", "a1.h0<q>", "a1.h3<v>", "m0"]))
    assert masks["transformer.h.1.attn.q.weight"] is not None
    _backward(model_a, 1)
    _backward(model_b, 1)
    masked.step(masks, config.lr)
    plain.step()
    for name, mask in masks.items():
        a, b = pmap_a.params[name], pmap_b.params[name]
        keep = torch.ones_like(a, dtype=torch.bool) if mask is None else mask.full(a.shape)
        assert torch.equal(a[keep], b[keep]), name


def test_gpt2_fused_qkv_stays_in_sync_with_its_views():
    model, pmap, bank = _setup()
    config = OPTIMIZERS[0]
    optimizer = MaskedOptimizer({n: pmap.params[n] for n in full_finetune_params(pmap)}, config)
    masks = {name: None for name in optimizer.params}
    _backward(model, 1)
    optimizer.step(masks, config.lr)
    fused = pmap.params["transformer.h.0.attn.qkv.weight"]
    q = pmap.params["transformer.h.0.attn.q.weight"]
    assert torch.equal(fused[:, : q.shape[0]], q.T)


def test_state_round_trip_resumes_identically():
    config = OPTIMIZERS[1]
    model_a, pmap_a, bank_a = _setup()
    names = list(bank_a.param_names)
    opt_a = MaskedOptimizer({n: pmap_a.params[n] for n in names}, config)
    masks = bank_a.masks(bank_a.nodes_of(["a1.h2", "a1.h0<q>", "m0"]))
    for step in (1, 2):
        opt_a.zero_grad()
        _backward(model_a, step)
        opt_a.step(masks, config.lr)
    tensors, extra = opt_a.state_tensors()
    model_b, pmap_b, _ = _setup()
    with torch.no_grad():
        for name in names:
            pmap_b.params[name].copy_(pmap_a.params[name])
    opt_b = MaskedOptimizer({n: pmap_b.params[n] for n in names}, config)
    opt_b.load_state_tensors(tensors, extra)
    for opt, model in ((opt_a, model_a), (opt_b, model_b)):
        opt.zero_grad()
        _backward(model, 3)
        opt.step(masks, config.lr)
    for name in names:
        assert torch.equal(pmap_a.params[name], pmap_b.params[name]), name
