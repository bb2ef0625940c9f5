"""Score a model on a task: accuracy, mean logit difference and each task's own figures.

accuracy = fraction of examples where logit(answer) > logit(wrong) at the target position, so for
sv-disagreement it is the fraction where the *flipped* verb wins (a base model scores ~0), and for
gender-pronoun it is the stereotype rate (answer = the stereotyped pronoun).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from circuitviz.tasks.base import (
    NoUsableExamples,
    TaskData,
    TaskScores,
    answer_loss,
    logit_diff,
    no_report,
)
from circuitviz.tasks.data import build_task_data, is_task_file
from circuitviz.tasks.registry import get_task

Forward = Callable[[torch.Tensor], torch.Tensor]  # ids [batch, pos] -> logits [batch, pos, d_vocab]


@torch.no_grad()
def score_task(
    forward: Forward,
    data: TaskData,
    *,
    report: Callable[[TaskScores], dict[str, float]] = no_report,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Run `forward` on the clean prompts of `data` and summarise.

    Right padding never reaches the target position of a causal model, so no attention mask is
    passed: any callable from ids to logits works (a Bridge, or `lambda ids: hf(ids).logits`).
    """
    if data.n_examples == 0:
        raise ValueError(
            f"task {data.task}: no usable example on split {data.split!r} "
            f"({data.n_dropped_multitoken} multi-token, {data.n_dropped_identical} identical-token, "
            f"{data.n_length_mismatch} length-mismatched, {data.n_too_long} too long); nothing to "
            "score"
        )
    diffs, losses = [], []
    for batch in data.batches(batch_size):
        logits = forward(batch.clean_ids)  # [batch, pos, d_vocab]
        diffs.append(logit_diff(logits, batch).float().cpu())
        losses.append(answer_loss(logits, batch).float().cpu())
    diff = torch.cat(diffs) if diffs else torch.zeros(0)
    loss = torch.cat(losses) if losses else torch.zeros(0)
    scores = TaskScores(logit_diff=diff, tags=data.tags)
    result: dict[str, Any] = {
        "task": data.task,
        "split": data.split,
        "n_examples": data.n_examples,
        "n_dropped_multitoken": data.n_dropped_multitoken,
        "n_dropped_identical": data.n_dropped_identical,
        "n_length_mismatch": data.n_length_mismatch,
        "n_too_long": data.n_too_long,
        "accuracy": scores.accuracy(),
        "logit_diff": float(diff.mean().item()),
        "logit_diff_std": float(diff.std().item()) if len(diff) > 1 else None,  # undefined for 1
        "answer_loss": float(loss.mean().item()),
    }
    result.update(report(scores))
    return result


def evaluate_task(
    model: Any,
    task: str | Path,
    *,
    split: str = "test",
    n: int = 512,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Evaluate a `LoadedModel` (anything with `.bridge`, `.tokenizer` and `.device`) on a task.

    Returns accuracy, logit_diff (mean), logit_diff_std, answer_loss, n_examples, the n_dropped_*
    counts, and the task's own keys: sv-*: attractor_accuracy, relative_clause_accuracy;
    gender-pronoun: stereotype_rate, mean_p_stereotyped, prejudice_risk. A .jsonl path is scored
    with the generic figures only. Raises NoUsableExamples when no example survives tokenization.
    """
    data = build_task_data(
        task,
        model.tokenizer,
        split=split,
        n=n,
        seed=seed,
        device=model.device,
        max_length=model.info.n_ctx or None,
    )
    if data.n_examples == 0:
        raise NoUsableExamples(
            f"task {task} ({split} split): no usable example ({data.n_dropped_multitoken} with a "
            f"multi-token answer, {data.n_dropped_identical} with identical answer tokens, "
            f"{data.n_length_mismatch} with clean/corrupted prompts of different lengths, "
            f"{data.n_too_long} longer than the model's context)"
            + ("; --split all scores every pair of a file" if split != "all" else "")
        )
    report = no_report if is_task_file(task) else get_task(str(task)).report
    return score_task(model.bridge, data, report=report, batch_size=batch_size)
