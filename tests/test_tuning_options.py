"""Each tuning option shows up in what the run records (tiny random GPT-2, a few steps each)."""

import dataclasses
import math
import os

import pytest
import torch

from circuitviz.attribution import AttributionConfig
from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tasks import build_task_data
from circuitviz.tuning import TuneConfig, create_run, run_tuning
from circuitviz.tuning.loss import token_weights, training_ids, training_loss
from circuitviz.tuning.schedule import is_discovery_step, top_n_at

BASE = TuneConfig(
    top_n=10,
    steps=4,
    batch_size=8,
    n_train=48,
    n_dev=16,
    n_probe=8,
    n_heldout=8,
    eval_every=0,
    snapshot_every=0,
    checkpoint_every=0,
    lr=0.02,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from circuitviz.demo.tokenizer import build_demo_tokenizer

    directory = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer().save_pretrained(directory)
    old = os.environ.get("CIRCUITVIZ_DEMO_MODEL")
    os.environ["CIRCUITVIZ_DEMO_MODEL"] = str(directory)
    yield load_model("random:gpt2-tiny", device="cpu", seed=4)
    if old is None:
        del os.environ["CIRCUITVIZ_DEMO_MODEL"]
    else:
        os.environ["CIRCUITVIZ_DEMO_MODEL"] = old


def _steps(model, config, tmp_path, task="sv-disagreement"):
    writer = create_run(model, task, config, tmp_path)
    with writer:
        run_tuning(model, task, config, writer)
    return Run(writer.dir).steps()


def test_topn_schedules_follow_the_papers_formula():
    linear = dataclasses.replace(
        BASE, top_n=10, topn_schedule="linear", topn_start=50, topn_warmup=4
    )
    assert [top_n_at(t, linear) for t in range(1, 7)] == [50, 40, 30, 20, 10, 10]
    cosine = dataclasses.replace(linear, topn_schedule="cosine")
    expected = [10 + 40 / 2 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert [top_n_at(t, cosine) for t in range(1, 5)] == [round(v) for v in expected]
    every = dataclasses.replace(BASE, every=3)
    assert [is_discovery_step(t, every) for t in range(1, 8)] == [1, 0, 0, 1, 0, 0, 1]
    assert not is_discovery_step(1, dataclasses.replace(BASE, method="full"))


def test_every_k_and_schedule_in_the_records(model, tmp_path):
    config = dataclasses.replace(
        BASE, every=2, topn_schedule="linear", topn_start=30, topn_warmup=2
    )
    steps = _steps(model, config, tmp_path)
    assert steps["discovered"].tolist() == [True, False, True, False]
    assert steps["top_n"].tolist() == [30, 30, 10, 10]
    assert steps["n_edges"].tolist() == [30, 30, 10, 10]


@pytest.mark.parametrize(
    "changes",
    [
        {"attribution": AttributionConfig(method="eap-ig-inputs", ig_steps=2, positions="target")},
        {"selection": "node_weighted"},
        {"selection": "threshold", "threshold": 0.0},
        {"attribution": AttributionConfig(baseline="mean", positions="all")},
        {"optimizer": "adamw", "grad_clip": 0.5, "warmup_steps": 2},
        {"loss": "weighted", "target_weight": 5.0},
        {"paper_graph": True},
    ],
    ids=[
        "eap-ig",
        "node-weighted",
        "threshold",
        "mean-all",
        "adamw-clip-warmup",
        "weighted",
        "paper",
    ],
)
def test_options_run_and_record(model, tmp_path, changes):
    steps = _steps(model, dataclasses.replace(BASE, **changes), tmp_path)
    assert len(steps) == 4 and steps["loss"].notna().all()
    if "warmup_steps" in changes:
        assert steps["lr"].tolist() == pytest.approx([0.01, 0.02, 0.02, 0.02])
    if changes.get("selection") == "threshold":
        assert (steps["n_edges"] > 10).all()  # every edge with |score| >= 0


def test_layer0_qkv_and_random_activation_add_nodes(model, tmp_path):
    plain = _steps(model, BASE, tmp_path / "a")
    forced = _steps(model, dataclasses.replace(BASE, layer0_qkv=True), tmp_path / "b")
    extra = _steps(model, dataclasses.replace(BASE, random_ratio=0.5), tmp_path / "c")
    n_layer0 = 3 * model.info.n_heads
    assert (forced["n_nodes"] >= n_layer0).all()
    assert (forced["tuned_params_exact"] >= plain["tuned_params_exact"]).all()
    assert (extra["n_nodes"] > plain["n_nodes"]).all()


def test_epochs_set_the_number_of_steps(model, tmp_path):
    config = dataclasses.replace(BASE, steps=None, epochs=2, n_train=24, batch_size=8)
    steps = _steps(model, config, tmp_path)
    assert steps["step"].tolist() == list(range(1, 7))  # 2 epochs x 3 batches


def test_losses_and_balanced_answers(model):
    data = build_task_data("gender-pronoun", model.tokenizer, split="train", n=64, seed=0)
    batch = data.batch
    swapped = training_ids(batch, dataclasses.replace(BASE, answer_swap=0.5), step=3)
    rows = torch.arange(len(batch))
    at_answer = swapped[rows, batch.answer_pos_in_train]
    is_wrong = at_answer == batch.wrong_ids
    assert torch.equal(is_wrong | (at_answer == batch.answer_ids), torch.ones_like(is_wrong))
    assert 0.25 < is_wrong.float().mean() < 0.75
    assert torch.equal(training_ids(batch, BASE, step=3), batch.train_ids)

    weighted = dataclasses.replace(BASE, loss="weighted", target_weight=4.0)
    weights = token_weights(batch, weighted)
    assert torch.all(weights[rows, batch.answer_pos_in_train - 1] == 4.0)
    assert weights.sum() == token_weights(batch, BASE).sum() + 3 * len(batch)

    logits = torch.randn(*batch.train_ids.shape, model.info.d_vocab)
    plain = training_loss(logits, batch.train_ids, batch, BASE)
    debias = training_loss(
        logits, batch.train_ids, batch, dataclasses.replace(BASE, debias_beta=2.0)
    )
    at_target = logits[rows, batch.target_pos]
    gap = (at_target[rows, batch.answer_ids] - at_target[rows, batch.wrong_ids]).mean().abs()
    assert float(debias.total) == pytest.approx(plain.lm + 2.0 * float(gap), rel=1e-5)
