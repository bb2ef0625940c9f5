"""Task data types, the split rule and the metrics every task shares.

A task is a generator of `Example`s (clean prompt, corrupted prompt, answer, wrong answer). A tokenizer
turns examples into a `TaskData`, whose `TaskBatch`es hold padded token ids and the index tensors the
metrics read. Layout of a batch (right padding, no Python loop over items anywhere downstream):

    clean_ids      [batch, pos]    prompt tokens, padded with the tokenizer's pad id
    corrupt_ids    [batch, pos]    same length as clean_ids row by row (pairs that differ are excluded)
    attention_mask [batch, pos]    1 on prompt tokens, 0 on padding (shared by clean and corrupt;
                                   int64 0/1 rather than bool, as Hugging Face models expect)
    target_pos     [batch]         index of the last prompt token: its logits predict the answer
    answer_ids     [batch]         the answer token
    wrong_ids      [batch]         the contrasting token
    train_ids      [batch, pos_t]  prompt + answer + continuation tokens (the prompt is an exact prefix)
    train_mask     [batch, pos_t]  1 on train tokens, 0 on padding (int64, like attention_mask)
    answer_pos_in_train [batch]    = target_pos + 1, where the answer token sits in train_ids

Sign convention of every metric: positive means the model prefers `answer` over `wrong`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from circuitviz.tasks.catalog import TaskInfo, task_info
from circuitviz.tasks.sft_metrics import outcome_logprob, process_loss

Split = Literal["train", "dev", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "dev", "test", "all")
# Percent of the hash space owned by each split: 80 / 10 / 10.
_SPLIT_BOUNDS = (("train", 80), ("dev", 90), ("test", 100))


def split_of(text: str) -> str:
    """Which split a prompt belongs to, from a stable hash of its text (never Python's hash()).

    The rule does not depend on any seed, so the splits of every seed are disjoint, and the demo
    corpus (built from "train" prompts only) never contains a dev or test prompt verbatim.
    """
    bucket = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100
    return next(name for name, bound in _SPLIT_BOUNDS if bucket < bound)


@dataclass(frozen=True, kw_only=True)
class Example:
    """One clean/corrupted prompt pair.

    `clean` ends right before the answer; `answer`, `wrong` and `continuation` carry their own leading
    space (" are", " is", " very old."), so `clean + answer + continuation` is the full sentence.
    """

    clean: str
    corrupt: str
    answer: str
    wrong: str
    continuation: str = ""
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("clean", "corrupt", "answer", "wrong"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Example.{name} must be a non-empty string, got {value!r}")
        if self.answer == self.wrong:
            raise ValueError(f"Example.answer and Example.wrong are both {self.answer!r}")
        if not isinstance(self.continuation, str):
            raise ValueError(f"Example.continuation must be a string, got {self.continuation!r}")
        if not all(isinstance(tag, str) for tag in self.tags):
            raise ValueError(f"Example.tags must be strings, got {self.tags!r}")

    @property
    def sentence(self) -> str:
        """The full clean sentence with its answer: what a model trained on the task should write."""
        return self.clean + self.answer + self.continuation


@dataclass(frozen=True, kw_only=True)
class TaskBatch:
    """Padded token ids and metric indices for a batch of examples (see the module docstring)."""

    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_pos: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor
    train_ids: torch.Tensor
    train_mask: torch.Tensor
    answer_pos_in_train: torch.Tensor

    def __post_init__(self) -> None:
        n = self.clean_ids.shape[0]
        for name in _BATCH_FIELDS:
            value = getattr(self, name)
            if value.shape[0] != n:
                raise ValueError(f"TaskBatch.{name} has {value.shape[0]} rows, clean_ids has {n}")
        if self.corrupt_ids.shape != self.clean_ids.shape:
            raise ValueError(
                f"TaskBatch.corrupt_ids shape {tuple(self.corrupt_ids.shape)} differs from "
                f"clean_ids {tuple(self.clean_ids.shape)}"
            )

    def __len__(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.clean_ids.device

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(**{name: getattr(self, name).to(device) for name in _BATCH_FIELDS})

    def select(self, idx: torch.Tensor | Sequence[int]) -> TaskBatch:
        """The rows `idx`, with padding columns that no selected row uses trimmed away."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        rows = {name: getattr(self, name)[idx] for name in _BATCH_FIELDS}
        n_pos = int(rows["attention_mask"].sum(dim=1).max().item()) if len(idx) else 0
        n_pos_t = int(rows["train_mask"].sum(dim=1).max().item()) if len(idx) else 0
        for name in ("clean_ids", "corrupt_ids", "attention_mask"):
            rows[name] = rows[name][:, :n_pos]
        for name in ("train_ids", "train_mask"):
            rows[name] = rows[name][:, :n_pos_t]
        return TaskBatch(**rows)


_BATCH_FIELDS: tuple[str, ...] = (
    "clean_ids",
    "corrupt_ids",
    "attention_mask",
    "target_pos",
    "answer_ids",
    "wrong_ids",
    "train_ids",
    "train_mask",
    "answer_pos_in_train",
)


@dataclass(frozen=True, kw_only=True)
class TaskData:
    """The tokenized examples of one task split, plus what had to be left out and why.

    `examples[i]` is row i of `batch`. Examples whose answer or wrong answer is not exactly one token
    under the tokenizer are dropped (`n_dropped_multitoken`), as are examples whose answer and wrong
    answer map to the same token, e.g. both unknown words (`n_dropped_identical`); pairs whose clean
    and corrupted prompts tokenize to different lengths are excluded and counted
    (`n_length_mismatch`), never silently lost, and so are examples longer than the model's
    context (`n_too_long`).
    """

    task: str
    split: str
    examples: tuple[Example, ...]
    batch: TaskBatch
    n_dropped_multitoken: int = 0
    n_dropped_identical: int = 0
    n_length_mismatch: int = 0
    n_too_long: int = 0
    mismatched: tuple[Example, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.batch):
            raise ValueError(
                f"TaskData.examples has {len(self.examples)} items, batch has {len(self.batch)}"
            )

    @property
    def n_examples(self) -> int:
        return len(self.examples)

    @property
    def tags(self) -> tuple[tuple[str, ...], ...]:
        return tuple(example.tags for example in self.examples)

    def __len__(self) -> int:
        return self.n_examples

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[TaskBatch]:
        """Batches of at most `batch_size` rows; a shuffled order depends on `seed` only."""
        return row_batches(self.batch, self.n_examples, batch_size, shuffle=shuffle, seed=seed)


def row_batches(batch, n_rows: int, batch_size: int, *, shuffle: bool = False, seed: int = 0):
    """``batch.select`` of consecutive groups of at most ``batch_size`` of its ``n_rows`` rows, in
    order or in a shuffled order that depends on ``seed`` only (pair and instruction data alike)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.arange(n_rows)
    for start in range(0, n_rows, batch_size):
        yield batch.select(order[start : start + batch_size])


@dataclass(frozen=True, kw_only=True)
class TaskScores:
    """Per-example scores a task's `report` hook turns into its own figures.

    logit_diff[i] = logit(answer) - logit(wrong) at the target position of example i.
    """

    logit_diff: torch.Tensor
    tags: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if self.logit_diff.ndim != 1 or self.logit_diff.shape[0] != len(self.tags):
            raise ValueError(
                f"TaskScores.logit_diff must be [n] with n = len(tags) = {len(self.tags)}, "
                f"got shape {tuple(self.logit_diff.shape)}"
            )

    def mask(self, tag: str) -> torch.Tensor:
        """Boolean [n]: which examples carry `tag`."""
        return torch.tensor([tag in tags for tags in self.tags], dtype=torch.bool)

    def accuracy(self, tag: str | None = None) -> float:
        """Fraction of examples (with `tag`, if given) whose answer beats the wrong answer; NaN if none."""
        wins = self.logit_diff > 0
        if tag is not None:
            wins = wins[self.mask(tag)]
        return float(wins.float().mean().item()) if wins.numel() else float("nan")


class NoUsableExamples(ValueError):
    """An evaluation had nothing to score (every example dropped, or none drawn): an error, never a
    NaN figure."""


def no_report(scores: TaskScores) -> dict[str, float]:
    """The report of a task with no figures beyond accuracy and logit difference."""
    return {}


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A registry entry: how to generate a task's examples and which extra figures it reports.

    `generate(rng)` draws one Example from a `random.Random`. What the task is (its description,
    its `original_task` and its tuning defaults) lives in its catalog entry
    (`circuitviz.tasks.catalog`), which imports no torch; `info` is that entry.
    """

    name: str
    generate: Callable[[Any], Example]
    report: Callable[[TaskScores], dict[str, float]] = no_report
    answer_convention: str = "answer = the correct continuation, wrong = the contrasting one"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskSpec.name must be a non-empty string")
        if not callable(self.generate):
            raise ValueError(f"TaskSpec.generate must be callable, got {self.generate!r}")

    @property
    def info(self) -> TaskInfo:
        return task_info(self.name)

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def original_task(self) -> str | None:
        """The task whose circuit circuit-tuning draws as "before" (sv-disagreement ->
        sv-agreement); None otherwise."""
        return self.info.original_task


def target_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Logits at each row's target position: [batch, pos, d_vocab] -> [batch, d_vocab].

    Works on logits of `clean_ids`, `corrupt_ids` or `train_ids` alike, since the prompt is a prefix.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, batch.target_pos.to(logits.device)]


def _pair(values: torch.Tensor, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
    answer = values.gather(1, batch.answer_ids.to(values.device)[:, None])[:, 0]
    wrong = values.gather(1, batch.wrong_ids.to(values.device)[:, None])[:, 0]
    return answer, wrong


def logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """logit(answer) - logit(wrong) at the target position: [batch, pos, d_vocab] -> [batch]."""
    answer, wrong = _pair(target_logits(logits, batch), batch)
    return answer - wrong


def logprob_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """log p(answer) - log p(wrong) at the target position, through log_softmax: -> [batch].

    Equal in value to `logit_diff` (the normaliser cancels); it is the circuit-tuning paper's
    "log-prob" metric option, kept so runs can name it. `answer_loss` is the metric that differs.
    """
    answer, wrong = _pair(torch.log_softmax(target_logits(logits, batch).float(), dim=-1), batch)
    return answer - wrong


def answer_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Cross-entropy of the answer token at the target position: -> [batch] (lower is better)."""
    logprobs = torch.log_softmax(target_logits(logits, batch).float(), dim=-1)
    answer, _ = _pair(logprobs, batch)
    return -answer


METRICS: dict[str, Callable[[torch.Tensor, TaskBatch], torch.Tensor]] = {
    "logit_diff": logit_diff,
    "logprob_diff": logprob_diff,
    "answer_loss": answer_loss,
    # Instruction (SFT) tasks: see circuitviz.tasks.sft_metrics.
    "process": process_loss,
    "outcome": outcome_logprob,
}
PAIR_METRICS: tuple[str, ...] = ("logit_diff", "logprob_diff", "answer_loss")
SFT_METRICS: tuple[str, ...] = ("process", "outcome")
