"""Metrics of SFT batches: what circuit discovery differentiates and what training minimises.

On logits ``[batch, pos, d_vocab]`` of ``batch.input_ids``, with ``nll[b, p]`` the negative
log-probability of token ``p`` given the tokens before it (read at position ``p - 1``):

* ``process_loss`` (the paper's "process" metric, its default for Llama tasks): per example, the
  mean ``nll`` over its response tokens (``labels != -100``): the fine-tuning loss itself, so the
  circuit is what the whole worked response relies on. Lower is better.
* ``outcome_logprob`` (the paper's "outcome" metric): per example, the summed log-probability of
  the final answer's tokens only (``answer_mask``): the circuit of getting the answer right,
  whatever the working. Higher is better. Every row needs located answer tokens
  (``SFTData.with_located_answers``); a row without any is an error, not a zero.
* ``sft_loss``: the training objective, the mean ``nll`` over every response token of the batch
  (each token counts once, as Hugging Face's ``labels`` loss).
* ``response_nll``: per example, the summed ``nll`` over response tokens and their count, from which
  evaluation builds a token-weighted response loss over many batches.
* ``process_scale``: per example, its ``process_loss`` gradient over its ``sft_loss`` gradient (the
  batch's response tokens over the example's), so that one backward of the training loss also
  gives the process metric's gradients (circuit-tuning's shared backward).

Under the attribution sign convention a score estimates m(edge patched) - m(clean): for ``process``
a positive score means patching the edge away raises the loss (the edge helps); for ``outcome`` a
negative score means the edge raises the answer's probability (it helps).
"""

from __future__ import annotations

import torch

from circuitviz.tasks.sft import IGNORE_INDEX


def _check(batch) -> None:
    if getattr(batch, "labels", None) is None:
        raise ValueError(
            "the process and outcome metrics read an SFT batch (labels); this is a pair-task "
            "batch: use logit_diff, logprob_diff or answer_loss"
        )


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half precision is too coarse for a log-softmax; float64 stays float64 (for the oracles)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def token_nll(logits: torch.Tensor, batch) -> torch.Tensor:
    """``[batch, pos]``: nll of each response token at its own position (0 elsewhere)."""
    _check(batch)
    labels = batch.labels.to(logits.device)[:, 1:]  # [batch, pos - 1]
    nll = torch.nn.functional.cross_entropy(
        _at_least_float32(logits[:, :-1]).flatten(0, 1),
        labels.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)  # 0 on ignored tokens
    return torch.nn.functional.pad(nll, (1, 0))  # position 0 is never predicted


def response_counts(batch, device: torch.device | None = None) -> torch.Tensor:
    """``[batch]``: each example's response tokens (the targets its ``nll`` is taken on)."""
    return (batch.labels.to(device) != IGNORE_INDEX)[:, 1:].sum(dim=1)


def _every_row_responds(count: torch.Tensor) -> None:
    if bool((count == 0).any()):
        raise ValueError("an SFT row has no response token; it cannot be scored")


def response_nll(logits: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed nll ``[batch]``, response tokens ``[batch]``)."""
    nll = token_nll(logits, batch)
    return nll.sum(dim=1), response_counts(batch, logits.device)


def process_loss(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean nll of each example's response tokens: ``[batch]``."""
    total, count = response_nll(logits, batch)
    _every_row_responds(count)
    return total / count


def outcome_logprob(logits: torch.Tensor, batch) -> torch.Tensor:
    """Summed log-probability of each example's final-answer tokens: ``[batch]``."""
    nll = token_nll(logits, batch)
    answer = batch.answer_mask.to(logits.device)
    missing = ~answer.any(dim=1)
    if bool(missing.any()):
        raise ValueError(
            f"the outcome metric needs the answer tokens of every example; {int(missing.sum())} "
            "of this batch have none (no answer, or it was truncated away): score "
            "SFTData.with_located_answers(), or use the process metric"
        )
    return -(nll * answer).sum(dim=1)


def sft_loss(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean nll over every response token of the batch: a scalar to backpropagate."""
    total, count = response_nll(logits, batch)
    return total.sum() / count.sum().clamp_min(1)


def process_scale(batch) -> torch.Tensor:
    """``[batch]``: the batch's response-token count over each example's. Example ``b`` enters
    ``sft_loss`` as ``sum_nll[b] / N`` and ``process_loss`` as ``sum_nll[b] / n[b]``, so its gradient
    of the process metric is ``N / n[b]`` times its gradient of the loss. Raises like
    ``process_loss`` for an example with no response token."""
    _check(batch)
    count = response_counts(batch)
    _every_row_responds(count)
    return count.sum().clamp_min(1).double() / count.double()
