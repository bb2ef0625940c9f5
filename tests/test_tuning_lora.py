"""LoRA and circuit-LoRA: the adapters' algebra against slow oracles, frozen base weights bit for bit,
out-of-circuit slices bit-identical through optimizer steps, merged weights equal to the adapted
forward (also on the bridge's attribution path), resuming, and run: loading."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map, load_model
from circuitviz.runs import Run, RunWriter
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.discovery import hook_flags
from circuitviz.tuning.lora import A_SUFFIX, B_SUFFIX, AdapterSet, layout_of
from circuitviz.tuning.masks import build_mask_bank
from circuitviz.tuning.optim import MaskedOptimizer

SPECS = ["random:gpt2-tiny", "random:llama-tiny"]
OPTIMIZERS = [
    TuneConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.1),
    TuneConfig(optimizer="adamw", lr=0.01, weight_decay=0.1),
]


def _setup(spec, *, dtype="float64", mlp_groups=None, **config):
    model = load_model(spec, device="cpu", dtype=dtype, seed=3)
    graph = graph_for(model.info, mlp_groups=mlp_groups)
    pmap = build_param_map(model, graph)
    bank = build_mask_bank(pmap, graph)
    config = TuneConfig(lora_rank=4, lora_alpha=8.0, lora_dropout=0.0, **config)
    return model, pmap, bank, config


def _randomise(adapters: AdapterSet, seed: int = 0) -> None:
    """Non-zero B as well as A, as after training, so that every update is visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapters.params.values():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def _ids(step=0, batch=3, pos=9):
    return torch.randint(0, 200, (batch, pos), generator=torch.Generator().manual_seed(step))


def _loss(model, ids):
    logits = model.bridge(ids)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _oracle_delta(layout, a, b, scale):
    """dW in the stored orientation, one unit and one entry block at a time (obviously right)."""
    d_out, d_in = layout.d_out, layout.d_in
    delta = torch.zeros(d_out, d_in, dtype=a.dtype)
    for unit in range(layout.n_units):
        block = scale * b[unit] @ a[unit]
        if layout.side == "out":
            size = d_out // layout.n_units
            delta[unit * size : (unit + 1) * size, :] = block
        else:
            size = d_in // layout.n_units
            delta[:, unit * size : (unit + 1) * size] = block
    return delta.T if layout.transposed else delta


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("per_unit", [False, True], ids=["lora", "circuit-lora"])
def test_merged_weights_are_base_plus_the_oracle_delta(spec, per_unit):
    model, pmap, bank, config = _setup(spec, mlp_groups=2 if per_unit else None)
    before = {name: p.detach().clone() for name, p in pmap.params.items()}
    adapters = AdapterSet(model, bank, config, per_unit=per_unit)
    _randomise(adapters)
    adapters.merge(list(adapters.targets))
    sides = set()
    for name, target in adapters.targets.items():
        layout = target.layout
        sides.add((layout.side, layout.n_units > 1))
        expected = before[name] + _oracle_delta(
            layout, adapters.params[name + A_SUFFIX], adapters.params[name + B_SUFFIX], 2.0
        )
        torch.testing.assert_close(pmap.params[name], expected, rtol=1e-12, atol=1e-12)
        if per_unit:
            assert layout.rank == math.ceil(4 / layout.n_units)
    # circuit-LoRA cuts some tensors by output rows and some by input columns; LoRA none.
    assert sides == ({("out", True), ("in", True)} if per_unit else {("out", False)})
    adapters.unmerge(list(adapters.targets))
    for name, param in pmap.params.items():
        assert torch.equal(param, before[name]), name  # W0 back, bit for bit


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("per_unit", [False, True], ids=["lora", "circuit-lora"])
def test_adapter_forward_equals_the_merged_model_on_both_bridge_paths(spec, per_unit):
    """The training forward (base weights, adapter hooks) computes the model that evaluation and
    generation (merged weights, module forwards) and attribution (merged weights read directly
    by the bridge) compute."""
    model, _, bank, config = _setup(spec)
    adapters = AdapterSet(model, bank, config, per_unit=per_unit)
    _randomise(adapters, seed=1)
    adapters.merge(list(adapters.targets))
    ids = _ids()
    with torch.no_grad(), hook_flags(model.bridge, False):
        merged = model.bridge(ids)
    with torch.no_grad(), hook_flags(model.bridge, True):
        attributed = model.bridge(ids)
    with (
        torch.no_grad(),
        hook_flags(model.bridge, False),
        adapters.training_pass(adapters.masks(None)),
    ):
        adapted = model.bridge(ids)
    torch.testing.assert_close(adapted, merged, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(attributed, merged, rtol=1e-10, atol=1e-10)
    from circuitviz.models.plain import plain_hf_model

    with torch.no_grad():
        plain = plain_hf_model(model)(ids).logits  # generation's model shares the merged tensors
    # (Llama's norm and the plain model's sdpa compute in float32 inside a float64 model.)
    torch.testing.assert_close(plain, merged, rtol=1e-5, atol=1e-5)


def test_a_training_forward_that_skips_an_adapter_is_refused():
    model, _, bank, config = _setup("random:llama-tiny")
    adapters = AdapterSet(model, bank, config, per_unit=False)
    with (
        pytest.raises(RuntimeError, match="without calling its module"),
        hook_flags(model.bridge, True),  # the attribution path reads weights, skips forwards
        adapters.training_pass(adapters.masks(None)),
    ):
        model.bridge(_ids())


@pytest.mark.parametrize("config", OPTIMIZERS, ids=["sgd", "adamw"])
@pytest.mark.parametrize("spec", SPECS)
def test_lora_steps_leave_every_base_weight_bit_identical(config, spec):
    model, pmap, bank, base_config = _setup(spec)
    config = dataclasses.replace(base_config, optimizer=config.optimizer, lr=config.lr)
    before = {n: p.detach().clone() for n, p in model.bridge.named_parameters()}
    adapters = AdapterSet(model, bank, config, per_unit=False)
    optimizer = MaskedOptimizer(adapters.params, config)
    masks = adapters.masks(None)
    for param in model.bridge.parameters():
        param.requires_grad_(False)
    for step in range(1, 5):
        optimizer.zero_grad()
        with hook_flags(model.bridge, False), adapters.training_pass(masks):
            _loss(model, _ids(step)).backward()
            assert all(param.grad is None for param in model.bridge.parameters())
            optimizer.step(masks, config.lr)
    targets = set(adapters.targets)
    for name, param in model.bridge.named_parameters():
        canonical = name.replace("._original_component", "")
        if canonical not in targets and "attn.qkv" not in canonical and "c_attn" not in canonical:
            assert torch.equal(param, before[name]), name  # embeddings, norms, biases
    for name in targets:
        assert torch.equal(adapters.base[name], before[_raw(model, name)])  # W0 kept exactly
        assert not torch.equal(pmap.params[name], adapters.base[name])  # the merged update
    adapters.unmerge(list(targets))
    for name, param in model.bridge.named_parameters():
        assert torch.equal(param, before[name]), name  # every weight, the fused c_attn included


def _raw(model, canonical):
    return next(
        raw
        for raw, _ in model.bridge.named_parameters()
        if raw.replace("._original_component", "") == canonical
    )


@pytest.mark.parametrize("config", OPTIMIZERS, ids=["sgd", "adamw"])
@pytest.mark.parametrize("spec", SPECS)
def test_circuit_lora_leaves_out_of_circuit_slices_bit_identical(config, spec):
    """A changing circuit: every step, the factors of units outside it and the merged weight
    slices they own do not move, momentum and weight decay included."""
    model, pmap, bank, base_config = _setup(spec, mlp_groups=2)
    config = dataclasses.replace(base_config, optimizer=config.optimizer, lr=config.lr)
    adapters = AdapterSet(model, bank, config, per_unit=True)
    optimizer = MaskedOptimizer(adapters.params, config)
    for param in model.bridge.parameters():
        param.requires_grad_(False)
    generator = torch.Generator().manual_seed(7)
    moved_somewhere = False
    for step in range(1, 7):
        nodes = torch.rand(bank.n_nodes, generator=generator) < 0.35
        units = bank.units(nodes)
        masks = adapters.masks(units)
        weight_masks = bank.masks(nodes)
        factors = {n: p.detach().clone() for n, p in adapters.params.items()}
        weights = {n: pmap.params[n].detach().clone() for n in adapters.targets}
        optimizer.zero_grad()
        with hook_flags(model.bridge, False), adapters.training_pass(masks):
            for name, param in adapters.params.items():
                param.requires_grad_(name in masks)
            _loss(model, _ids(step)).backward()
            optimizer.step(masks, config.lr)
        for name, target in adapters.targets.items():
            first, end = target.bank_units
            frozen_units = ~units[first:end]
            for suffix in (A_SUFFIX, B_SUFFIX):
                now, then = adapters.params[name + suffix], factors[name + suffix]
                assert torch.equal(now[frozen_units], then[frozen_units]), (step, name)
            mask = weight_masks.get(name, "frozen")
            weight = pmap.params[name]
            if mask == "frozen":
                assert torch.equal(weight, weights[name]), (step, name)
            elif mask is not None:
                keep = mask.full(weight.shape)
                assert torch.equal(weight[~keep], weights[name][~keep]), (step, name)
                moved_somewhere |= not torch.equal(weight[keep], weights[name][keep])
    assert moved_somewhere  # the circuit's own slices did train


def test_counts_are_the_trainable_factor_entries():
    model, pmap, bank, config = _setup("random:llama-tiny", mlp_groups=2)
    lora = AdapterSet(model, bank, config, per_unit=False)
    counts = lora.count(lora.masks(None))
    assert counts["exact"] == counts["whole"] == lora.n_params
    circuit = AdapterSet(model, bank, config, per_unit=True)
    nodes = bank.nodes_of(["a0.h1<q>", "a1.h0", "m1.g0"])
    counts = circuit.count(circuit.masks(bank.units(nodes)))
    # a0.h1's q rows (1 of 4 heads), a1.h0's o columns (1 of 4), m1.g0's up/gate rows and down
    # columns (1 of 2 groups): each unit's A and B
    expected = 0
    for name, unit_of in (
        ("model.layers.0.self_attn.q_proj.weight", 1),
        ("model.layers.1.self_attn.o_proj.weight", 0),
        ("model.layers.1.mlp.up_proj.weight", 0),
        ("model.layers.1.mlp.gate_proj.weight", 0),
        ("model.layers.1.mlp.down_proj.weight", 0),
    ):
        for suffix in (A_SUFFIX, B_SUFFIX):
            expected += circuit.params[name + suffix][unit_of].numel()
    assert counts["exact"] == expected
    assert counts["whole"] > counts["exact"]


def test_stored_factors_read_back_as_their_layout():
    model, pmap, bank, config = _setup("random:gpt2-tiny", mlp_groups=2)
    adapters = AdapterSet(model, bank, config, per_unit=True)
    for name, target in adapters.targets.items():
        read = layout_of(
            name,
            adapters.params[name + A_SUFFIX],
            adapters.params[name + B_SUFFIX],
            pmap.params[name].shape,
            target.layout.transposed,
        )
        assert read == target.layout, name


# -- whole runs --------------------------------------------------------------------------------

TASK = "sv-disagreement"
SMALL = TuneConfig(
    top_n=30,
    steps=8,
    batch_size=8,
    n_train=64,
    n_dev=16,
    n_probe=8,
    n_heldout=8,
    eval_every=4,
    snapshot_every=4,
    checkpoint_every=2,
    optimizer="adamw",
    lr=0.01,
    lora_rank=4,
    lora_alpha=8.0,
)


def _fresh(spec="random:gpt2-tiny"):
    return load_model(spec, device="cpu", seed=5)


@pytest.mark.parametrize("method", ["lora", "circuit-lora"])
def test_a_run_records_adapters_and_loads_back_as_a_run_model(demo_tokenizer_dir, tmp_path, method):
    config = dataclasses.replace(SMALL, method=method, lora_dropout=0.1)
    model = _fresh()
    embed = model.bridge.transformer.wte.weight.detach().clone()
    writer = create_run(model, TASK, config, tmp_path)
    with writer:
        result = run_tuning(model, TASK, config, writer)
    run = Run(result.run_dir)
    steps = run.steps()
    assert run.status == "finished" and len(steps) == 8
    ratio = run.summary["tuned_param_ratio"]
    if method == "lora":
        assert (steps["discovered"] == 0).all()
        n_model = run.graph_meta["n_model_params"]
        assert ratio == pytest.approx(run.summary["adapter_params"] / n_model)
    else:
        assert steps["discovered"].all() and (steps["n_edges"] == 30).all()
        assert 0 < ratio < run.summary["adapter_params"] / run.graph_meta["n_model_params"]
    assert torch.equal(model.bridge.transformer.wte.weight, embed)
    assert (run.head_changes()["rel_change"] > 0).any()  # the meter sees the merged weights
    # checkpoints hold factors, not weights; run: merges them onto the base model
    tensors = run.load_checkpoint(8)
    assert all(key.endswith((A_SUFFIX, B_SUFFIX)) for key in tensors if key.startswith("param/"))
    loaded = load_model(f"run:{result.run_id}", runs_dir=tmp_path, seed=5)
    ids = _ids(pos=6) % 300
    with torch.no_grad():
        torch.testing.assert_close(loaded.bridge(ids), model.bridge(ids), rtol=1e-5, atol=1e-5)
        earlier = load_model(f"run:{result.run_id}@2", runs_dir=tmp_path, seed=5)  # slimmed
        assert not torch.allclose(earlier.bridge(ids), model.bridge(ids))


@pytest.mark.parametrize("method", ["lora", "circuit-lora"])
def test_resume_after_a_crash_ends_bit_identical(demo_tokenizer_dir, tmp_path, method):
    config = dataclasses.replace(SMALL, method=method, lora_dropout=0.1)
    reference_model = _fresh()
    writer = create_run(reference_model, TASK, config, tmp_path / "a")
    with writer:
        reference = run_tuning(reference_model, TASK, config, writer)

    class Crash(Exception):
        pass

    def crash_after_five(progress):
        if progress.step == 5:
            raise Crash

    crashed = _fresh()
    writer = create_run(crashed, TASK, config, tmp_path / "b")
    with pytest.raises(Crash), writer:
        run_tuning(crashed, TASK, config, writer, progress=crash_after_five)
    resumed_model = _fresh()
    with RunWriter.resume(writer.dir) as resumed_writer:
        resumed = run_tuning(resumed_model, TASK, config, resumed_writer)
    for (name, a), b in zip(
        reference_model.bridge.named_parameters(), resumed_model.bridge.parameters()
    ):
        assert torch.equal(a, b), name
    a_steps, b_steps = Run(reference.run_dir).steps(), Run(resumed.run_dir).steps()
    assert a_steps["loss"].tolist() == b_steps["loss"].tolist()
    assert resumed.summary["final_lm_loss"] == reference.summary["final_lm_loss"]


def test_bad_lora_options_name_the_field():
    with pytest.raises(ValueError, match="TuneConfig.lora_targets"):
        TuneConfig(method="lora", lora_targets="q,x")
    with pytest.raises(ValueError, match="TuneConfig.lora_targets"):
        TuneConfig(method="lora", lora_targets="q,q")
    with pytest.raises(ValueError, match="TuneConfig.lora_rank"):
        TuneConfig(method="lora", lora_rank=0)
    with pytest.raises(ValueError, match="TuneConfig.circuit_forward"):
        TuneConfig(method="circuit-lora", circuit_forward=True)
    model, _, bank, _ = _setup("random:gpt2-tiny")
    with pytest.raises(ValueError, match="names no projection"):
        AdapterSet(model, bank, TuneConfig(lora_targets="gate"), per_unit=False)


def test_rescoring_applies_each_checkpoint_onto_the_untouched_weights(demo_tokenizer_dir, tmp_path):
    """Rescoring walks a LoRA run's checkpoints in order; each one's factors must be merged onto
    the base weights, not onto the previous checkpoint's merged ones."""
    from circuitviz.tuning.rescore import rescore_run

    config = dataclasses.replace(SMALL, method="lora", steps=6, checkpoint_every=3)
    model = _fresh()
    with create_run(model, TASK, config, tmp_path) as writer:
        result = run_tuning(model, TASK, config, writer)
    rescored = _fresh()
    steps = rescore_run(rescored, Run(result.run_dir), probe_size=4, resamples=0)
    assert steps == [0, 3, 6]
    ids = _ids(pos=6) % 300
    with torch.no_grad():
        torch.testing.assert_close(rescored.bridge(ids), model.bridge(ids), rtol=1e-5, atol=1e-5)
    notes = Run(result.run_dir).snapshots()
    assert (notes["note"] == "rescore").sum() == 3
