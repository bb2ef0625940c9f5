"""The tuning loop end to end on a tiny random GPT-2: records, step-1 circuit, resume, bad input."""

import dataclasses

import pytest
import torch

from circuitviz.attribution import eap
from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map, load_model
from circuitviz.runs import Run, RunNotFound, RunStoreError, RunWriter
from circuitviz.runs.checkpoints import load_resume_state
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.data import build_tuning_data
from circuitviz.tuning.discovery import hook_flags, select_edges
from circuitviz.tuning.loop import Tuner, trainable_only
from circuitviz.tuning.masks import build_mask_bank
from circuitviz.tuning.optim import NonFiniteLoss

TASK = "sv-disagreement"
SMALL = TuneConfig(
    top_n=30,
    steps=12,
    batch_size=8,
    n_train=96,
    n_dev=24,
    n_probe=8,
    n_heldout=12,
    eval_every=4,
    snapshot_every=4,
    checkpoint_every=4,
    lr=0.05,
)


def fresh_model(demo_tokenizer_dir):
    return load_model("random:gpt2-tiny", device="cpu", seed=5)


def _run(model, config, root, **kwargs):
    writer = create_run(model, TASK, config, root)
    with writer:
        return run_tuning(model, TASK, config, writer, **kwargs)


def test_run_records_everything_the_dashboard_reads(demo_tokenizer_dir, tmp_path):
    model = fresh_model(demo_tokenizer_dir)
    embed_before = model.bridge.transformer.wte.weight.detach().clone()
    result = _run(model, SMALL, tmp_path)
    run = Run(result.run_dir)
    assert run.status == "finished"
    steps = run.steps()
    assert steps["step"].tolist() == list(range(1, 13))
    assert steps["discovered"].all()
    assert (steps["n_edges"] == 30).all() and (steps["top_n"] == 30).all()
    assert (steps["tuned_params_exact"] <= steps["tuned_params_whole"]).all()
    assert ((steps["tuned_ratio"] > 0) & (steps["tuned_ratio"] < 1)).all()
    assert run.evals()["step"].tolist() == [0, 4, 8, 12]
    snaps = run.snapshots()
    assert list(zip(snaps["step"], snaps["label"], snaps["task"])) == [
        (0, "before", "sv-agreement"),
        (0, "during", TASK),
        (4, "during", TASK),
        (8, "during", TASK),
        (12, "after", TASK),
    ]
    snapshot = run.snapshot(int(snaps["snapshot_id"].iloc[-1]))
    assert snapshot.selected.sum() == 30
    changes = run.head_changes()
    assert set(changes["kind"]) == {"q", "k", "v", "o", "mlp"}
    assert (changes["rel_change"] > 0).any()
    assert [step for step, _ in run.checkpoints()] == [4, 8, 12]
    for key in ("final_accuracy", "final_lm_loss", "base_lm_loss", "tuned_param_ratio"):
        assert key in run.summary
    # Embeddings belong to no node: circuit-tuning never moves them.
    assert torch.equal(model.bridge.transformer.wte.weight, embed_before)
    assert steps["tuned_ratio"].mean() == pytest.approx(run.summary["tuned_param_ratio"])


def test_step_one_circuit_is_what_discovery_reports_on_that_batch(demo_tokenizer_dir, tmp_path):
    config = dataclasses.replace(SMALL, steps=1, checkpoint_every=1)
    model = fresh_model(demo_tokenizer_dir)
    graph = graph_for(model.info)
    bank = build_mask_bank(build_param_map(model, graph), graph)
    data = build_tuning_data(model, TASK, config)
    batch = data.batch_for_step(1, config.seed)
    with hook_flags(model.bridge, True):
        scores = eap.attribute(model, graph, [batch], config.attribution)
    expected_nodes = bank.nodes_of_edges(select_edges(scores, config.top_n, config))
    result = _run(model, config, tmp_path, data=data)
    (_, path), *_ = Run(result.run_dir).checkpoints()
    state = load_resume_state(path.with_name(path.name.replace(".safetensors", ".state.pt")))
    assert state["circuit_nodes"] == expected_nodes.nonzero()[:, 0].tolist()


def test_a_discovery_step_shares_its_forward_with_the_training_step(demo_tokenizer_dir, tmp_path):
    """The step that discovers from the forward of the training text trains exactly like one that
    runs its own forward: same loss, same updated weights (to rounding), same circuit."""
    config = dataclasses.replace(SMALL, steps=2, every=1)
    data = build_tuning_data(fresh_model(demo_tokenizer_dir), TASK, config)
    tuners = []
    for shares in (True, False):
        model = fresh_model(demo_tokenizer_dir)
        writer = create_run(model, TASK, config, tmp_path / str(shares))
        tuner = Tuner(model, TASK, config, writer, data)
        tuner.shares_forward = shares
        with trainable_only(model, tuner.train_params.values()):
            losses = [tuner.step(step) for step in (1, 2)]
        writer.close()
        tuners.append((tuner, losses))
    (shared, shared_losses), (separate, separate_losses) = tuners
    assert shared_losses == pytest.approx(separate_losses, rel=1e-5)
    assert torch.equal(shared.circuit.nodes, separate.circuit.nodes)
    for name, param in shared.train_params.items():
        torch.testing.assert_close(param, separate.train_params[name], rtol=1e-5, atol=1e-6)
    moved = [name for name in shared.touched if name.endswith("weight")]
    assert moved  # the steps did train something


@pytest.mark.parametrize("method", ["circuit", "full"])
def test_grad_checkpointing_recomputes_blocks_and_trains_identically(
    demo_tokenizer_dir, tmp_path, method, monkeypatch
):
    config = dataclasses.replace(SMALL, method=method, steps=2, every=1)
    data = build_tuning_data(fresh_model(demo_tokenizer_dir), TASK, config)
    results = []
    for checkpointing in (False, True):
        run_config = dataclasses.replace(config, grad_checkpointing=checkpointing)
        model = fresh_model(demo_tokenizer_dir)
        writer = create_run(model, TASK, run_config, tmp_path / str(checkpointing))
        tuner = Tuner(model, TASK, run_config, writer, data)
        calls = []
        block_type = type(model.bridge.blocks[0])
        forward = block_type.forward

        def counted(self, *args, _forward=forward, _calls=calls, **kwargs):
            _calls.append(1)
            return _forward(self, *args, **kwargs)

        monkeypatch.setattr(block_type, "forward", counted)
        with trainable_only(model, tuner.train_params.values()):
            losses = [tuner.step(step) for step in (1, 2)]
        monkeypatch.undo()
        writer.close()
        results.append((tuner, losses, len(calls)))
    (plain, plain_losses, plain_calls), (ckpt, ckpt_losses, ckpt_calls) = results
    assert ckpt_calls > plain_calls  # the backward ran block 0 again
    assert ckpt_losses == pytest.approx(plain_losses, rel=1e-6)
    for name, param in plain.train_params.items():
        torch.testing.assert_close(ckpt.train_params[name], param, rtol=1e-6, atol=1e-7)
    assert type(ckpt.model.bridge.blocks[0]).__name__ == "BlockBridge"  # restored after use


def test_grad_checkpointing_is_refused_where_blocks_are_hooked():
    with pytest.raises(ValueError, match="so not with --method lora"):
        TuneConfig(method="lora", grad_checkpointing=True)
    with pytest.raises(ValueError, match="so not with --circuit-forward"):
        TuneConfig(circuit_forward=True, grad_checkpointing=True)


@pytest.mark.parametrize("method", ["circuit", "full", "random"])
def test_resume_after_a_crash_ends_bit_identical(demo_tokenizer_dir, tmp_path, method):
    config = dataclasses.replace(SMALL, method=method, optimizer="adamw", lr=0.01)
    reference_model = fresh_model(demo_tokenizer_dir)
    reference = _run(reference_model, config, tmp_path / "a")

    class Crash(Exception):
        pass

    def crash_after_seven(progress):
        if progress.step == 7:
            raise Crash

    crashed_model = fresh_model(demo_tokenizer_dir)
    writer = create_run(crashed_model, TASK, config, tmp_path / "b")
    with pytest.raises(Crash), writer:
        run_tuning(crashed_model, TASK, config, writer, progress=crash_after_seven)
    run_dir = writer.dir
    assert Run(run_dir).status == "failed"
    assert Run(run_dir).steps()["step"].max() == 7

    resumed_model = fresh_model(demo_tokenizer_dir)
    with RunWriter.resume(run_dir) as writer:
        resumed = run_tuning(resumed_model, TASK, config, writer)
    for (name, a), b in zip(
        reference_model.bridge.named_parameters(), resumed_model.bridge.parameters()
    ):
        assert torch.equal(a, b), name
    a_steps, b_steps = Run(reference.run_dir).steps(), Run(resumed.run_dir).steps()
    assert a_steps["loss"].tolist() == b_steps["loss"].tolist()
    assert a_steps["n_nodes"].tolist() == b_steps["n_nodes"].tolist()
    assert Run(resumed.run_dir).status == "finished"
    assert resumed.summary["final_lm_loss"] == reference.summary["final_lm_loss"]


def test_diverging_loss_stops_the_run_and_keeps_earlier_steps(demo_tokenizer_dir, tmp_path):
    config = dataclasses.replace(SMALL, method="full", lr=1e12, momentum=0.0, checkpoint_every=1)
    model = fresh_model(demo_tokenizer_dir)
    writer = create_run(model, TASK, config, tmp_path)
    with pytest.raises(NonFiniteLoss, match=r"at step (\d+)") as info, writer:
        run_tuning(model, TASK, config, writer)
    run = Run(writer.dir)
    assert run.status == "failed"
    assert "diverged" in run.status_message
    failed_step = int(info.value.args[0].split("at step ")[1].split(":")[0])
    assert failed_step > 1
    assert run.steps()["step"].tolist() == list(range(1, failed_step))
    assert [step for step, _ in run.checkpoints()] == list(range(1, failed_step))


def test_a_diverging_circuit_run_stops_as_a_diverging_loss_does(demo_tokenizer_dir, tmp_path):
    """Circuit-tuning discovers before its loss: on a model the last update broke, the edge scores
    are NaN first. That is said as divergence (NonFiniteLoss, the run kept and marked failed),
    never turned into a circuit."""
    config = dataclasses.replace(SMALL, method="circuit", lr=1e12, momentum=0.0, checkpoint_every=1)
    model = fresh_model(demo_tokenizer_dir)
    writer = create_run(model, TASK, config, tmp_path)
    with pytest.raises(NonFiniteLoss, match=r"at step (\d+): training diverged") as info, writer:
        run_tuning(model, TASK, config, writer)
    run = Run(writer.dir)
    assert run.status == "failed" and "diverged" in run.status_message
    failed_step = int(info.value.args[0].split("at step ")[1].split(":")[0])
    assert failed_step > 1
    assert run.steps()["step"].tolist() == list(range(1, failed_step))


def test_bad_input_is_refused_before_anything_is_written(demo_tokenizer_dir, tmp_path):
    model = fresh_model(demo_tokenizer_dir)
    n_edges = graph_for(model.info).n_edges
    with pytest.raises(ValueError, match=f"larger than the graph, which has {n_edges} edges"):
        create_run(model, TASK, dataclasses.replace(SMALL, top_n=n_edges + 1), tmp_path)
    threshold = dataclasses.replace(SMALL, selection="threshold", threshold=0.1, top_n=10**6)
    create_run(model, TASK, threshold, tmp_path / "ok").close()  # no N to check
    with pytest.raises(ValueError, match="unknown task"):
        build_tuning_data(model, "no-such-task", SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunStoreError, match="is a file"):
        create_run(model, TASK, SMALL, blocker)
    with pytest.raises(RunNotFound):
        RunWriter.resume(tmp_path, "no-such-run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ok"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("every", 0),
        ("steps", 0),
        ("steps", -3),
        ("top_n", 0),
        ("lr", float("nan")),
        ("method", "x"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TuneConfig.{field}"):
        dataclasses.replace(SMALL, **{field: value})
