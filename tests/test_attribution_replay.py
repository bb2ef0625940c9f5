"""The replay of target positions (``circuitviz.attribution.replay``) against the full backward.

Plain EAP at the target positions takes the replay; ``full_backward=True`` asks for the bridge's
own backward through every position, which the finite-difference tests of ``test_attribution_eap``
check against exact patching. On float64 models the two must agree to rounding; the corrupted
baseline the replay's own forward computes must be the bridge's at the target positions.
"""

from __future__ import annotations

import pytest
import torch
from support.batches import Batch, random_batch

from circuitviz.attribution import AttributionConfig, attribute, batch_edge_scores, replay
from circuitviz.attribution.activations import baseline_activations
from circuitviz.graph.topology import graph_for
from circuitviz.tasks.base import METRICS


@pytest.fixture(params=["gpt2", "llama"])
def model(request):
    return request.getfixturevalue(f"tiny_{request.param}")


def training_text(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt followed by two more tokens, right-padded: a text the prompt is a prefix of."""
    n, n_pos = batch.clean_ids.shape
    ids = torch.zeros(n, n_pos + 2, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(batch.attention_mask.sum(1).tolist()):
        ids[row, :length] = batch.clean_ids[row, :length]
        ids[row, length : length + 2] = torch.tensor([7, 11])
        mask[row, : length + 2] = 1
    return ids, mask


def assert_same_scores(fast: torch.Tensor, full: torch.Tensor) -> None:
    assert full.abs().max() > 0
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12 * float(full.abs().max()))


@pytest.mark.parametrize("baseline", ["corrupted", "mean", "zero"])
@pytest.mark.parametrize("paper", [False, True])
def test_the_replay_gives_the_full_backwards_scores(model, baseline, paper):
    graph = graph_for(model.info, paper=paper)
    batch = random_batch(n=5, n_pos=7, seed=11).padded(2)  # rows of different lengths
    config = AttributionConfig(method="eap", baseline=baseline, positions="target")
    assert replay.applies(model, graph, config, batch, custom_metric=False, per_head_copies=False)
    fast = batch_edge_scores(model, graph, batch, config).scores
    full = batch_edge_scores(model, graph, batch, config, full_backward=True).scores
    assert_same_scores(fast, full)


@pytest.mark.parametrize("metric", ["logit_diff", "logprob_diff", "answer_loss"])
def test_the_replay_reads_a_training_text_and_every_pair_metric(model, metric):
    """A tuning step's call: the clean forward reads the training text, its logits come back with
    their graph for the loss, and the scores are the prompt's."""
    graph = graph_for(model.info)
    batch = random_batch(n=4, n_pos=6, seed=12)
    ids, mask = training_text(batch)
    config = AttributionConfig(method="eap", baseline="corrupted", metric=metric)
    kwargs = {"forward_ids": (ids, mask), "return_logits": True}
    fast = batch_edge_scores(model, graph, batch, config, **kwargs)
    full = batch_edge_scores(model, graph, batch, config, full_backward=True, **kwargs)
    assert_same_scores(fast.scores, full.scores)
    torch.testing.assert_close(fast.logits.detach(), full.logits.detach())
    assert fast.logits.requires_grad  # the training loss backpropagates through them


def test_the_corrupted_baseline_is_the_bridges_at_the_target_positions(model):
    graph = graph_for(model.info)
    batch = random_batch(n=5, n_pos=7, seed=13).padded(1)
    own = replay.corrupted_baseline(model, graph, batch)
    bridge = baseline_activations(model, graph, batch, "corrupted")
    rows = torch.arange(len(batch))
    expected = bridge.sources[:, rows, batch.target_pos][:, :, None, :]
    assert own.sources.shape == (graph.n_src, len(batch), 1, model.info.d_model)
    torch.testing.assert_close(own.sources, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(own.embed, bridge.embed[rows, batch.target_pos][:, None, :])


def test_a_target_on_padding_is_refused(tiny_gpt2):
    batch = random_batch(n=4, n_pos=6, seed=14)
    assert int(batch.attention_mask[:, -1].sum()) < len(batch)  # some row is padded at the end
    bad = Batch(**{**batch.__dict__, "target_pos": torch.full_like(batch.target_pos, 5)})
    with pytest.raises(ValueError, match="target position is padding"):
        replay.corrupted_baseline(tiny_gpt2, graph_for(tiny_gpt2.info), bad)


def test_what_takes_the_full_backward(tiny_gpt2):
    """Each case the replay does not cover goes the full way (and its scores are then exact by
    construction); a plain tuning step's call takes the replay."""
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch(seed=15)
    plain = AttributionConfig(method="eap", baseline="corrupted", positions="target")

    def applies(config=plain, graph=graph, batch=batch, **kw) -> bool:
        kw = {"custom_metric": False, "per_head_copies": False, **kw}
        return replay.applies(tiny_gpt2, graph, config, batch, **kw)

    assert applies()
    assert not applies(AttributionConfig(method="eap", positions="all"))
    assert not applies(AttributionConfig(method="eap-ig-inputs", positions="target"))
    assert not applies(AttributionConfig(method="eap-ig-activations", positions="target"))
    assert not applies(custom_metric=True)
    assert not applies(per_head_copies=True)
    assert not applies(graph=graph_for(tiny_gpt2.info, mlp_groups=2))
    left = Batch(**{**batch.__dict__, "attention_mask": batch.attention_mask.flip(1)})
    assert not applies(batch=left)


def test_a_users_metric_reads_every_position_through_the_full_backward(tiny_gpt2):
    """A metric of the caller's may read any position, so it never goes through the replay, whose
    logits are the target positions' alone: the scores are the full backward's."""
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch(n=4, n_pos=6, seed=16)
    config = AttributionConfig(method="eap", baseline="corrupted", positions="target")

    def last_column(logits, batch):  # past the target of every row but the full one
        return logits[:, -1, :].logsumexp(-1)

    mine = batch_edge_scores(tiny_gpt2, graph, batch, config, metric=last_column).scores
    full = batch_edge_scores(
        tiny_gpt2, graph, batch, config, metric=last_column, full_backward=True
    ).scores
    assert mine.abs().max() > 0
    torch.testing.assert_close(mine, full, rtol=0, atol=0)
    builtin = batch_edge_scores(tiny_gpt2, graph, batch, config, metric=METRICS["logit_diff"])
    assert_same_scores(
        builtin.scores,
        batch_edge_scores(tiny_gpt2, graph, batch, config, full_backward=True).scores,
    )


def test_float32_demo_model_on_a_real_task_batch():
    """The demo model (float32) on an sv-disagreement batch, as a tuning step scores it: the
    replay and the full backward agree to float32 rounding."""
    import circuitviz as cv

    model = cv.load_model("demo")
    graph = cv.graph_for(model)
    data = cv.task_data("sv-disagreement", model, split="train", n=16)
    batch = next(iter(data.batches(16)))
    config = AttributionConfig(method="eap", baseline="corrupted", positions="target")
    fast = batch_edge_scores(model, graph, batch, config).scores
    full = batch_edge_scores(model, graph, batch, config, full_backward=True).scores
    assert full.abs().max() > 0
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_scores_from_a_forward_that_is_not_finite_are_an_error(tiny_llama):
    """A left-padded batch makes the Llama-family bridge's own forward NaN (its first padded
    query sees no key); the scores are then refused with the cause, never returned as numbers."""
    batch = random_batch(n=4, n_pos=6, seed=3)
    lengths = batch.attention_mask.sum(1)

    def left(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([row.roll(int(6 - n)) for row, n in zip(x, lengths, strict=True)])

    padded_left = Batch(
        clean_ids=left(batch.clean_ids),
        corrupt_ids=left(batch.corrupt_ids),
        attention_mask=left(batch.attention_mask),
        target_pos=torch.full_like(batch.target_pos, 5),
        answer_ids=batch.answer_ids,
        wrong_ids=batch.wrong_ids,
    )
    assert not bool(padded_left.attention_mask[:, 0].all())  # some row starts with padding
    graph = graph_for(tiny_llama.info)
    config = AttributionConfig(method="eap", baseline="corrupted", positions="target")
    with pytest.raises(ValueError, match="NaN or infinite.*pad on the right"):
        attribute(tiny_llama, graph, [padded_left], config)
