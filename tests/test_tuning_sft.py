"""Circuit-tuning on instruction (SFT) data, end to end through the command line, on the bundled
demo model (whose word-level vocabulary the examples below use): defaults that follow the model
and the task kind, response-only training loss, response loss and exact match in the records,
the held-out text named, MLP neuron groups, slimmed checkpoints that still load as run: models."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import pytest
import torch

from circuitviz.cli import main
from circuitviz.runs import Run, RunStore
from circuitviz.tuning.config import PRETRAINED_DEFAULTS, TuneConfig

NAMES = ["Mary", "John", "Emma", "Tom", "Lucy", "Peter", "Sarah", "Paul", "Anna", "Ben"]
PLACES = ["box", "cabinet", "table", "drawer", "bag"]


def write_sft(path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, other, place = rng.choice(NAMES), rng.choice(NAMES), rng.choice(PLACES)
        rows.append(
            {
                "prompt": f"{name} gave a drink to {other} . The key is in the {place} .",
                "response": f"{other} has the drink and the key is in the {place} .",
                "answer": place,
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"sft:{path}"


SMALL = [
    *("--model", "demo", "--batch-size", "4", "--n-train", "200", "--n-dev", "8"),
    *("--n-probe", "4", "--n-heldout", "8", "--top-n", "30", "--no-progress"),
]


def tune(capsys, tmp_path, *argv) -> Run:
    assert main(["tune", *SMALL, "--runs-dir", str(tmp_path / "runs"), *argv, "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    return RunStore([tmp_path / "runs"]).open(run_id)


def test_an_instruction_run_records_response_loss_exact_match_and_its_held_out_text(
    capsys, tmp_path
):
    task = write_sft(tmp_path / "train.jsonl", 240, seed=0)
    run = tune(capsys, tmp_path, "--task", task, "--steps", "4", "--eval-every", "2")
    assert run.status == "finished"
    stored = run.config["attribution"]
    assert (stored["metric"], stored["baseline"], stored["positions"]) == ("process", "mean", "all")
    evals = run.evals()
    assert evals["step"].tolist() == [0, 2, 4]
    assert evals["task_metric"].notna().all()  # the dev response loss at every evaluation
    # Exact match (a generation per example) before and after only, unless asked for more often.
    assert evals["accuracy"].isna().tolist() == [False, True, False]
    assert run.summary["heldout_text"] == "demo-filler"  # the demo model reads its own filler
    assert run.summary["final_response_loss"] < run.summary["base_response_loss"]
    snapshots = run.snapshots()
    assert set(snapshots["label"]) == {"before", "during", "after"}
    assert set(snapshots["task"]) == {task}


def test_eval_takes_the_dev_examples_of_another_file(capsys, tmp_path):
    train = write_sft(tmp_path / "train.jsonl", 120, seed=1)
    dev = write_sft(tmp_path / "dev.jsonl", 5, seed=2)
    argv = ["--task", train, "--eval", dev, "--steps", "2", "--eval-every", "0"]
    run = tune(capsys, tmp_path, *argv)
    assert run.config["eval_task"] == dev
    assert run.summary["final_n_dev_examples"] == 5  # all of the --eval file, not a split of it


def test_pair_only_options_are_refused_for_instruction_tasks(capsys, tmp_path):
    task = write_sft(tmp_path / "train.jsonl", 40, seed=3)
    runs = str(tmp_path / "runs")
    code = main(["tune", *SMALL, "--task", task, "--debias-beta", "0.5", "--runs-dir", runs])
    assert code == 2
    assert "--debias-beta read a pair task's answer token" in capsys.readouterr().err
    code = main(["tune", *SMALL, "--task", "sv-agreement", "--eval", task, "--runs-dir", runs])
    assert code == 2 and "--eval takes an instruction task" in capsys.readouterr().err


def config_for(task: str, model: str, *argv) -> TuneConfig:
    from circuitviz.cli.tune import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["tune", "--task", task, "--model", model, *argv])
    return build_config(args, task)


def test_defaults_follow_the_model_and_the_task():
    demo = config_for("sv-disagreement", "demo")
    assert (demo.optimizer, demo.lr, demo.steps) == ("sgd", 1e-2, 800)
    real = config_for("sv-disagreement", "smollm2-135m")
    for key, value in PRETRAINED_DEFAULTS.items():
        assert getattr(real, key) == value, key
    arithmetic = config_for("arithmetic", "smollm2-135m")
    assert (arithmetic.attribution.metric, arithmetic.attribution.baseline) == ("process", "mean")
    assert arithmetic.every == 10 and arithmetic.optimizer == "adamw"
    mine = config_for("arithmetic", "smollm2-135m", "--lr", "3e-5", "--metric", "outcome")
    assert mine.lr == 3e-5 and mine.attribution.metric == "outcome"
    gender = config_for("gender-pronoun", "demo")
    assert (gender.lr, gender.top_n) == (0.003, 50)  # the task's own over the general ones


def test_mlp_groups_tune_at_neuron_group_granularity(capsys, tmp_path):
    task = write_sft(tmp_path / "train.jsonl", 120, seed=4)
    whole = tune(capsys, tmp_path, "--task", task, "--steps", "2", "--eval-every", "0")
    grouped = tune(
        capsys, tmp_path, "--task", task, "--steps", "2", "--eval-every", "0", "--mlp-groups", "4"
    )
    assert grouped.config["mlp_groups"] == 4
    names = grouped.graph().dst_names
    assert "m0.g3" in names and "m0" not in names
    assert grouped.steps()["tuned_params_exact"].max() < whole.steps()["tuned_params_exact"].max()


def test_old_checkpoints_are_slimmed_and_still_load_as_run_models(capsys, tmp_path):
    from circuitviz.models import load_model

    task = write_sft(tmp_path / "train.jsonl", 120, seed=5)
    common = ["--task", task, "--eval-every", "0", "--snapshot-every", "0", "--seed", "3"]
    long = tune(capsys, tmp_path, *common, "--steps", "8", "--checkpoint-every", "2")
    short = tune(capsys, tmp_path, *common, "--steps", "4", "--checkpoint-every", "2")
    files = {step: path for step, path in long.checkpoints()}
    assert sorted(files) == [2, 4, 6, 8]
    sizes = {step: path.stat().st_size for step, path in files.items()}
    assert sizes[2] < sizes[6] and sizes[4] < sizes[8]  # no optimizer state, changed tensors only
    from circuitviz.runs.checkpoints import load_tensors

    assert not any(name.startswith("optim/") for name in load_tensors(files[4]))
    assert any(name.startswith("optim/") for name in load_tensors(files[6]))
    runs = str(tmp_path / "runs")
    at_four = load_model(f"run:{long.id}@4", runs_dir=runs)
    final_of_short = load_model(f"run:{short.id}", runs_dir=runs)
    for (name, a), b in zip(
        at_four.bridge.named_parameters(), final_of_short.bridge.parameters(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_tunes_arithmetic_for_a_few_steps(capsys, tmp_path):
    argv = [
        *("--model", "smollm2-135m", "--task", "arithmetic", "--steps", "2", "--top-n", "300"),
        *("--n-train", "16", "--n-dev", "4", "--n-probe", "2", "--n-heldout", "4"),
        *("--batch-size", "2", "--max-new-tokens", "24", "--checkpoint-every", "0"),
    ]
    assert main(["tune", *argv, "--runs-dir", str(tmp_path), "--no-progress", "--json"]) == 0
    run = RunStore([tmp_path]).open(json.loads(capsys.readouterr().out)["run_id"])
    assert run.status == "finished" and run.config["optimizer"] == "adamw"
    assert run.summary["heldout_text"].startswith("python-docs")
    assert run.summary["final_response_loss"] > 0


def test_evaluate_reports_the_held_out_text_loss(capsys):
    argv = ["evaluate", "--model", "demo", "--task", "sv-agreement", "-n", "8", "--heldout", "8"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["heldout_text"] == "demo-filler" and result["n_heldout"] == 8
    assert 0 < result["heldout_loss"] < 5


def test_examples_longer_than_the_models_context_are_cut_to_it(capsys, tmp_path):
    """The demo model reads 64 tokens; arithmetic problems are longer. max_length (512) is lowered
    to the context, so tune, discover and evaluate truncate and count instead of failing."""
    from circuitviz.models import load_model
    from circuitviz.tasks import SFTFormat, build_sft_data

    fmt = SFTFormat(max_length=512)
    assert fmt.within_context(64).max_length == 64
    assert fmt.within_context(None) is fmt and fmt.within_context(1024) is fmt
    model = load_model("demo")
    data = build_sft_data(
        "arithmetic", model.tokenizer, split="dev", n=8, fmt=fmt.within_context(model.info.n_ctx)
    )
    assert data.n_truncated > 0
    assert data.batch.input_ids.shape[1] <= model.info.n_ctx
    main(["tune", *SMALL, "--task", "arithmetic", "--steps", "1", "--runs-dir", str(tmp_path)])
    main(["discover", "--model", "demo", "--task", "arithmetic", "-n", "4", "--json"])
    capsys.readouterr()


def _sft_tuner(tmp_path, task: str, name: str, **config):
    from circuitviz.attribution.config import AttributionConfig
    from circuitviz.models import load_model
    from circuitviz.tuning.loop import Tuner
    from circuitviz.tuning.storage import create_run

    model = load_model("demo")
    attribution = AttributionConfig(metric="process", baseline="mean", positions="all")
    values = dict(top_n=30, steps=3, batch_size=4, n_train=40, n_dev=4, n_probe=4, n_heldout=4)
    config = TuneConfig(**dict(values, attribution=attribution, lr=0.05) | config)
    writer = create_run(model, task, config, tmp_path / name)
    return Tuner(model, task, config, writer, None)


def test_one_shared_backward_scores_and_trains_as_the_two_it_replaces(tmp_path):
    """On an instruction batch scored with the process metric the training loss's backward is the
    attribution's too (each example's gradient rescaled): the same scores and the same gradients
    as a metric backward followed by a loss backward, to float32 rounding."""
    from circuitviz.tuning.discovery import score_edges_on_training_text, shared_backward
    from circuitviz.tuning.loop import trainable_only
    from circuitviz.tuning.loss import training_loss

    task = write_sft(tmp_path / "train.jsonl", 60, seed=5)
    tuner = _sft_tuner(tmp_path, task, "runs")
    model, graph, config = tuner.model, tuner.graph, tuner.config
    batch, ids = tuner._batch(1)
    params = list(tuner.train_params.values())

    def loss_of(logits):
        return training_loss(logits, ids, batch, config).total

    with trainable_only(model, params):
        two, logits = score_edges_on_training_text(model, graph, batch, ids, config)
        separate = torch.autograd.grad(loss_of(logits), params, allow_unused=True)
        shared = shared_backward(batch, config, loss_of, params)
        assert shared is not None
        one, _ = score_edges_on_training_text(model, graph, batch, ids, config, shared=shared)
    assert two.scores.abs().max() > 0
    torch.testing.assert_close(
        one.scores, two.scores, rtol=1e-4, atol=1e-6 * two.scores.abs().max()
    )
    reached = 0
    for param, grad in zip(params, separate, strict=True):
        if grad is None:
            assert param.grad is None or not param.grad.any()
            continue
        reached += 1
        torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-7)
    assert reached > len(params) // 2
    # Nothing else may share it: a pair batch, or EAP-IG (more gradient points than the clean one).
    pairs = _sft_tuner(tmp_path, "sv-agreement", "pairs", attribution=TuneConfig().attribution)
    assert shared_backward(pairs._batch(1)[0], pairs.config, loss_of, params) is None
    for rule in ("left", "right"):
        ig = replace(config.attribution, method="eap-ig-inputs", ig_rule=rule)
        assert shared_backward(batch, replace(config, attribution=ig), loss_of, params) is None


def test_a_run_with_the_shared_backward_takes_the_steps_of_one_without(tmp_path):
    task = write_sft(tmp_path / "train.jsonl", 60, seed=6)
    shared = _sft_tuner(tmp_path, task, "shared")
    apart = _sft_tuner(tmp_path, task, "apart")
    apart.shares_backward = False
    for tuner in (shared, apart):
        with trainable_only_of(tuner):
            tuner.losses = [tuner.step(step) for step in (1, 2, 3)]
        tuner.writer.close()
    torch.testing.assert_close(shared.losses, apart.losses, rtol=1e-5, atol=0)
    assert shared.losses[2] < shared.losses[0]  # it trains
    for name, param in shared.train_params.items():
        torch.testing.assert_close(param, apart.train_params[name], rtol=1e-5, atol=1e-7)


def trainable_only_of(tuner):
    from circuitviz.tuning.loop import trainable_only

    return trainable_only(tuner.model, tuner.train_params.values())
