"""Circuit-only training forwards against the faithfulness module's no-grad edge ablation."""

import dataclasses
import os

import pytest
import torch

from circuitviz.attribution.activations import BaselineActivations, source_means
from circuitviz.attribution.faithfulness import run_with_ablated_edges
from circuitviz.graph.select import random_circuit
from circuitviz.graph.topology import graph_for
from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tasks import TaskBatch
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.ablation import run_circuit_forward
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.data import build_tuning_data
from circuitviz.tuning.discovery import hook_flags


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from circuitviz.demo.tokenizer import build_demo_tokenizer

    directory = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer().save_pretrained(directory)
    old = os.environ.get("CIRCUITVIZ_DEMO_MODEL")
    os.environ["CIRCUITVIZ_DEMO_MODEL"] = str(directory)
    model = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=2)
    config = TuneConfig(batch_size=6, n_train=48, n_dev=12, n_probe=6, n_heldout=6, top_n=20)
    data = build_tuning_data(model, "sv-disagreement", config)
    yield model, config, data
    if old is None:
        del os.environ["CIRCUITVIZ_DEMO_MODEL"]
    else:
        os.environ["CIRCUITVIZ_DEMO_MODEL"] = old


def _as_prompt(batch: TaskBatch) -> TaskBatch:
    """The training text as the clean input, which is what the faithfulness code runs."""
    return dataclasses.replace(
        batch,
        clean_ids=batch.train_ids,
        corrupt_ids=batch.train_ids,
        attention_mask=batch.train_mask,
    )


def test_full_circuit_is_the_plain_forward(setup):
    model, config, data = setup
    graph = graph_for(model.info)
    batch = data.batch_for_step(1, 0)
    logits = run_circuit_forward(model, graph, graph.valid_mask, batch.train_ids, batch.train_mask)
    with hook_flags(model.bridge, False):
        plain = model.bridge(batch.train_ids)
    real = batch.train_mask.bool()
    torch.testing.assert_close(logits[real], plain[real], rtol=1e-9, atol=1e-9)


def test_matches_no_grad_edge_ablation_and_carries_gradients(setup):
    model, config, data = setup
    graph = graph_for(model.info)
    batch = data.batch_for_step(2, 0)
    circuit = random_circuit(graph, 40, seed=1)
    logits = run_circuit_forward(model, graph, circuit.edge_mask, batch.train_ids, batch.train_mask)
    prompt = _as_prompt(batch)
    with hook_flags(model.bridge, True):
        means = source_means(model, graph, [prompt])
        base = BaselineActivations(sources=means.sources[:, None, None, :], embed=means.embed)
        expected = run_with_ablated_edges(model, graph, prompt, circuit, base, positions="all")
    real = batch.train_mask.bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=1e-9, atol=1e-9)
    with hook_flags(model.bridge, False):
        plain = model.bridge(batch.train_ids)
    assert (logits[real] - plain[real]).abs().max() > 1e-3  # the ablation did something
    q = model.bridge.transformer.h[1].attn.q.weight
    q.grad = None
    logits.float().logsumexp(-1).mean().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    q.grad = None


def test_loop_with_circuit_forward_runs_to_the_end(setup, tmp_path):
    model, _, data = setup
    config = TuneConfig(
        batch_size=6,
        n_train=48,
        n_dev=12,
        n_probe=6,
        n_heldout=6,
        top_n=20,
        steps=3,
        circuit_forward=True,
        eval_every=0,
        snapshot_every=0,
        checkpoint_every=2,
    )
    fresh = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=2)
    writer = create_run(fresh, "sv-disagreement", config, tmp_path)
    with writer:
        run_tuning(fresh, "sv-disagreement", config, writer, data=data)
    assert Run(writer.dir).status == "finished"
    assert len(Run(writer.dir).steps()) == 3
    with pytest.raises(ValueError, match="circuit_forward needs a circuit"):
        dataclasses.replace(config, method="full")
