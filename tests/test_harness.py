"""``circuitviz harness``: lm-evaluation-harness in this process on the bundled local task, checked
against circuitviz's own log-likelihoods; results stored in the run and shown by ``compare``; a
dataset that cannot be loaded and an unknown task are one line each."""

from __future__ import annotations

import json

import lm_eval  # the harness extra: ./run.sh test installs it
import pytest
import torch

from circuitviz.cli import main
from circuitviz.harness.bundled import sv_agreement_rows
from circuitviz.harness.engine import BUNDLED_TASKS
from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig

TASK = "circuitviz_sv_agreement"
LIMIT = 24


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A short circuit-LoRA run of the demo model on sv-disagreement (agreement gets worse)."""
    root = tmp_path_factory.mktemp("runs")
    config = TuneConfig(
        method="circuit-lora",
        top_n=200,
        steps=25,
        batch_size=16,
        n_train=128,
        n_dev=16,
        n_probe=4,
        n_heldout=4,
        eval_every=0,
        snapshot_every=0,
        checkpoint_every=0,
        optimizer="adamw",
        lr=0.02,
        lora_rank=8,
    )
    model = load_model("demo", device="cpu")
    with create_run(model, "sv-disagreement", config, root, run_id="cl") as writer:
        run_tuning(model, "sv-disagreement", config, writer)
    return root


def _oracle_accuracy(spec: str, root) -> float:
    """The fraction of the first LIMIT documents whose correct verb the model scores higher, from
    circuitviz's own forward pass (every verb is one token of the demo vocabulary)."""
    model = load_model(spec, device="cpu", runs_dir=root)
    tok = model.tokenizer
    wins = []
    for row in sv_agreement_rows()[:LIMIT]:
        ids = tok(row["prefix"], return_tensors="pt").input_ids
        with torch.no_grad():
            logprobs = model.bridge(ids)[0, -1].log_softmax(-1)
        good, bad = (tok(row[k], add_special_tokens=False).input_ids for k in ("good", "bad"))
        assert len(good) == len(bad) == 1
        wins.append(bool(logprobs[good[0]] > logprobs[bad[0]]))
    return sum(wins) / len(wins)


def _harness(capsys, *argv) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = main(["harness", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in argv else err)


def test_harness_on_a_run_matches_our_scores_and_is_stored(tuned, capsys):
    code, result = _harness(
        capsys,
        "cl",
        "--runs-dir",
        str(tuned),
        "--tasks",
        TASK,
        "--limit",
        str(LIMIT),
        "--with-base",
        "--json",
    )
    assert code == 0, result
    record = result["tasks"][TASK]
    assert record["n"] == LIMIT and result["recorded"] and result["step"] == 25
    assert record["metrics"]["acc"] == pytest.approx(_oracle_accuracy("run:cl", tuned))
    base = result["base"][TASK]["metrics"]["acc"]
    assert base == pytest.approx(_oracle_accuracy("demo", tuned))
    assert base > 0.9  # the demo model knows agreement
    stored = Run(tuned / "cl").summary["harness"][TASK]
    assert stored["metrics"] == record["metrics"] and stored["base"]["metrics"]["acc"] == base
    assert stored["model"] == "run:cl" and stored["lm_eval"] == lm_eval.__version__
    capsys.readouterr()
    assert main(["compare", "cl", "--runs-dir", str(tuned), "--json", "--base"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1][f"harness/{TASK}/acc"] == record["metrics"]["acc"]
    assert rows[0][f"harness/{TASK}/acc"] == base  # the base row shows the base model's


def test_harness_on_a_model_spec_prints_without_storing(capsys):
    code, result = _harness(capsys, "demo", "--tasks", TASK, "--limit", "8", "--json")
    assert code == 0 and result["run_id"] is None and not result["recorded"]
    assert result["tasks"][TASK]["n"] == 8
    code, err = _harness(capsys, "demo", "--tasks", TASK, "--with-base")
    assert code == 2 and "--with-base applies to a run" in err


def test_a_dataset_that_cannot_be_loaded_is_one_line(tmp_path, capsys):
    (tmp_path / "remote.yaml").write_text(
        "task: needs_the_hub\n"
        "dataset_path: circuitviz-tests/not-a-dataset\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "{{q}}"\n'
        'doc_to_choice: "{{[a, b]}}"\n'
        "doc_to_target: 0\n"
    )
    code, err = _harness(
        capsys, "demo", "--tasks", "needs_the_hub", "--include-path", str(tmp_path), "--limit", "2"
    )
    assert code == 2 and err.count("\n") == 1
    assert "'needs_the_hub': its dataset could not be loaded" in err
    assert "--include-path" in err


def test_unknown_tasks_are_refused_before_any_model_loads(capsys):
    code, err = _harness(capsys, "no-such-model-anywhere", "--tasks", "no_such_task_xyz")
    assert code == 2 and "unknown harness task 'no_such_task_xyz'" in err
    assert TASK in err and err.count("\n") == 1


def test_the_bundled_task_file_is_what_its_generator_writes():
    rows = [
        json.loads(line) for line in (BUNDLED_TASKS / "sv_agreement.jsonl").read_text().splitlines()
    ]
    assert rows == sv_agreement_rows()
    assert len({row["prefix"] for row in rows}) == 64
    for row in rows:  # two inflections of one verb, the subject's number tagged
        assert row["good"] != row["bad"] and row["good"].startswith(" ")
        assert {"singular_subject", "plural_subject"} & set(row["tags"])
