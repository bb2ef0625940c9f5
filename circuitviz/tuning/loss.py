"""The training objective of circuit-tuning and its baselines.

1. The model reads the training text (``TaskBatch.train_ids``: prompt + answer + continuation);
   with ``answer_swap`` some rows get the contrasting answer token instead (balanced data).
2. ``lm``: mean next-token cross-entropy over every real token (the paper's ``weighted`` objective
   with p = 1). ``weighted``: the answer token's loss counts ``target_weight`` times (the paper's
   1/p), normalised by the total weight.
3. An instruction (SFT) batch: the mean next-token cross-entropy over its response tokens only
   (labels are masked on the prompt), as in ordinary supervised fine-tuning.
4. ``debias_beta > 0`` adds ``beta * |mean_b logit(answer) - logit(wrong)|`` at the target position
   (the paper's regulariser for its gender task), read from the same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitviz.tasks import TaskBatch
from circuitviz.tasks.sft import is_sft_batch
from circuitviz.tasks.sft_metrics import response_counts, sft_loss
from circuitviz.tuning.config import TuneConfig


@dataclass(frozen=True, kw_only=True)
class LossParts:
    total: torch.Tensor  # scalar, what is backpropagated
    lm: float
    debias: float


def training_ids(batch: TaskBatch, config: TuneConfig, step: int) -> torch.Tensor:
    """``train_ids`` with the answer token swapped for the wrong one in a seeded random subset of
    rows (probability ``answer_swap``; the subset depends only on ``seed`` and ``step``)."""
    ids = batch.train_ids
    if config.answer_swap <= 0 or is_sft_batch(batch):
        return ids
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    swap = (torch.rand(len(batch), generator=generator) < config.answer_swap).to(ids.device)
    rows = torch.arange(len(batch), device=ids.device)
    pos = batch.answer_pos_in_train.to(ids.device)
    ids = ids.clone()
    ids[rows, pos] = torch.where(swap, batch.wrong_ids.to(ids.device), ids[rows, pos])
    return ids


def token_weights(batch: TaskBatch, config: TuneConfig) -> torch.Tensor:
    """Weight of each predicted token ``[batch, pos_t - 1]``: 0 on padding, ``target_weight`` on
    the answer token under the ``weighted`` loss, 1 elsewhere."""
    mask = batch.train_mask
    weights = (mask[:, 1:].bool() & mask[:, :-1].bool()).float()
    if config.loss == "weighted":
        rows = torch.arange(len(batch), device=weights.device)
        # logits at position p predict token p + 1, so the answer is predicted at answer_pos - 1.
        weights[rows, batch.answer_pos_in_train.to(weights.device) - 1] *= config.target_weight
    return weights


def training_loss(
    logits: torch.Tensor, ids: torch.Tensor, batch: TaskBatch, config: TuneConfig
) -> LossParts:
    """The objective on ``logits [batch, pos_t, d_vocab]`` of ``ids [batch, pos_t]``. An
    instruction (SFT) batch is trained on its response tokens only (``tasks.sft_loss``: the prompt
    is context, not a target)."""
    if is_sft_batch(batch):
        lm = sft_loss(logits, batch)
        return LossParts(total=lm, lm=float(lm.detach()), debias=0.0)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logprobs.gather(2, ids[:, 1:, None])[..., 0]  # [batch, pos_t - 1]
    weights = token_weights(batch, config).to(nll.device)
    lm = (nll * weights).sum() / weights.sum()
    total = lm
    debias = torch.zeros((), device=lm.device)
    if config.debias_beta > 0:
        rows = torch.arange(len(batch), device=logits.device)
        at_target = logits[rows, batch.target_pos.to(logits.device)].float()  # [batch, d_vocab]
        answer = at_target.gather(1, batch.answer_ids.to(logits.device)[:, None])[:, 0]
        wrong = at_target.gather(1, batch.wrong_ids.to(logits.device)[:, None])[:, 0]
        debias = (answer - wrong).mean().abs()
        total = lm + config.debias_beta * debias
    return LossParts(total=total, lm=float(lm.detach()), debias=float(debias.detach()))


def loss_weight(batch: TaskBatch, config: TuneConfig) -> torch.Tensor:
    """The denominator of ``training_loss``'s mean on ``batch`` (a scalar tensor): its weighted
    token count, or an instruction batch's response tokens. Data-parallel training divides by the
    sum of these over every process's shard."""
    if is_sft_batch(batch):
        return response_counts(batch).sum().float()
    return token_weights(batch, config).sum()
