"""The SFT metrics (process, outcome) against direct computations and Hugging Face's own loss, and
edge attribution on SFT batches against the finite-difference oracle (GPT-2 and Llama shapes,
float64), plus the clear errors when a metric or baseline does not fit the batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from circuitviz.attribution import (
    AttributionConfig,
    FaithfulnessConfig,
    attribute,
    batch_edge_scores,
    edge_derivatives,
    evaluate_circuits,
)
from circuitviz.graph.select import top_n
from circuitviz.graph.topology import graph_for
from circuitviz.tasks import SFTBatch, outcome_logprob, process_loss, sft_loss
from circuitviz.tasks.sft import IGNORE_INDEX


def sft_batch(n: int = 4, n_pos: int = 8, vocab: int = 512, seed: int = 0) -> SFTBatch:
    """Random rows: a prompt of 2-3 tokens, a response to the row's end, right padding; the last
    two response tokens are the answer."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, n_pos + 1, (n,), generator=gen)
    lengths[0] = n_pos
    prompt_len = torch.randint(2, 4, (n,), generator=gen)
    pos = torch.arange(n_pos)[None, :]
    mask = (pos < lengths[:, None]).long()
    ids = torch.randint(3, vocab, (n, n_pos), generator=gen) * mask
    response = (pos >= prompt_len[:, None]) & mask.bool()
    labels = torch.where(response, ids, torch.full_like(ids, IGNORE_INDEX))
    answer = (pos >= (lengths - 2)[:, None]) & mask.bool()
    return SFTBatch(
        input_ids=ids, attention_mask=mask, labels=labels, answer_mask=answer, prompt_len=prompt_len
    )


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2):
    return tiny_gpt2 if request.param == "gpt2" else request.getfixturevalue("float64_llama")


def test_metrics_equal_their_definitions(tiny_gpt2):
    batch = sft_batch()
    with torch.no_grad():
        logits = tiny_gpt2.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    logprobs = torch.log_softmax(logits, dim=-1)
    process, outcome = process_loss(logits, batch), outcome_logprob(logits, batch)
    for row in range(len(batch)):
        # Slow and obvious: position p's token is predicted by the logits at p - 1.
        response = [p for p in range(1, batch.input_ids.shape[1]) if batch.labels[row, p] >= 0]
        nll = [-float(logprobs[row, p - 1, batch.input_ids[row, p]]) for p in response]
        answer = [p for p in response if batch.answer_mask[row, p]]
        ans = [float(logprobs[row, p - 1, batch.input_ids[row, p]]) for p in answer]
        assert float(process[row]) == pytest.approx(sum(nll) / len(nll), rel=1e-10)
        assert float(outcome[row]) == pytest.approx(sum(ans), rel=1e-10)
    # sft_loss is Hugging Face's own labels loss (token mean over the batch).
    with torch.no_grad():
        hf = tiny_gpt2.hf_model(
            batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
    assert float(sft_loss(logits, batch)) == pytest.approx(float(hf), rel=1e-6)  # HF: float32


def test_outcome_needs_every_answer():
    batch = sft_batch()
    holes = SFTBatch(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        labels=batch.labels,
        answer_mask=batch.answer_mask & (torch.arange(len(batch)) > 0)[:, None],
        prompt_len=batch.prompt_len,
    )
    logits = torch.zeros(*batch.input_ids.shape, 512)
    with pytest.raises(ValueError, match="1 of this batch have none"):
        outcome_logprob(logits, holes)


@pytest.mark.parametrize(
    ("metric", "baseline"), [("process", "mean"), ("process", "zero"), ("outcome", "mean")]
)
def test_sft_scores_equal_finite_differences(model, metric, baseline):
    graph = graph_for(model.info)
    batch = sft_batch()
    config = AttributionConfig(method="eap", baseline=baseline, positions="all", metric=metric)
    result = batch_edge_scores(model, graph, batch, config)
    scores = (result.scores / result.n_examples)[graph.valid_mask]
    oracle = edge_derivatives(model, graph, batch, config, graph.edge_index().tolist(), eps=1e-4)
    assert oracle.abs().max() > 1e-4
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-4 * float(oracle.abs().max()))


def test_sft_scores_with_mlp_groups_equal_finite_differences(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info, mlp_groups=4)
    batch = sft_batch(seed=2)
    config = AttributionConfig(baseline="mean", positions="all", metric="process")
    result = batch_edge_scores(tiny_gpt2, graph, batch, config)
    edges = [(i, j) for i, j in graph.edge_index().tolist() if ".g" in graph.dst_names[j]]
    index = torch.tensor(edges)
    scores = (result.scores / result.n_examples)[index[:, 0], index[:, 1]]
    oracle = edge_derivatives(tiny_gpt2, graph, batch, config, edges, eps=1e-4)
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-4 * float(oracle.abs().max()))


def test_padding_and_batching_do_not_change_sft_scores(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    batch = sft_batch(n=6, seed=4)
    config = AttributionConfig(baseline="mean", positions="all", metric="process")
    whole = attribute(tiny_gpt2, graph, [batch], config).scores
    split = attribute(tiny_gpt2, graph, [batch.select([0, 1, 2]), batch.select([3, 4, 5])], config)
    assert whole.abs().max() > 0
    torch.testing.assert_close(split.scores, whole, rtol=1e-5, atol=1e-7)


def test_faithfulness_runs_on_sft_batches(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    batch = sft_batch()
    scores = attribute(
        tiny_gpt2, graph, [batch], AttributionConfig(baseline="zero", metric="process")
    ).scores
    config = FaithfulnessConfig(baseline="zero", positions="all", metric="process")
    metrics = evaluate_circuits(tiny_gpt2, graph, [batch], [top_n(scores, graph, 20)], config)
    assert metrics.m_full != metrics.m_empty and len(metrics.faithfulness()) == 1


def test_mismatched_metric_or_baseline_is_a_clear_error(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    batch = sft_batch()
    with pytest.raises(ValueError, match="corrupted.* use baseline 'mean' or 'zero'"):
        AttributionConfig(metric="process", baseline="corrupted")
    with pytest.raises(ValueError, match="positions 'all'"):
        AttributionConfig(metric="outcome", baseline="mean", positions="target")
    with pytest.raises(ValueError, match="no corrupted prompt"):
        batch_edge_scores(tiny_gpt2, graph, batch, AttributionConfig(baseline="corrupted"))
    with pytest.raises(ValueError, match="'process' \\(mean response loss\\)"):
        batch_edge_scores(tiny_gpt2, graph, batch, AttributionConfig(baseline="mean"))
    pair = SimpleNamespace(
        clean_ids=batch.input_ids,
        corrupt_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        target_pos=batch.attention_mask.sum(1) - 1,
    )
    with pytest.raises(ValueError, match="metric 'process' is for instruction"):
        batch_edge_scores(
            tiny_gpt2, graph, pair, AttributionConfig(baseline="mean", metric="process")
        )


def test_an_instruction_metric_chosen_for_a_pair_task_names_the_pair_metrics(capsys):
    """The config is checked before the task is read, so its message serves both readings: an
    instruction task needing another baseline or positions, or a pair task needing its metric."""
    from circuitviz.cli import main

    for extra in ([], ["--baseline", "mean", "--positions", "target"]):
        argv = ["discover", "--model", "demo", "--task", "sv-agreement", "--metric", "process"]
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert "on a pair task, use a pair metric (logit_diff, logprob_diff, answer_loss)" in err
        assert len(err.strip().splitlines()) == 1
