"""Instruction (SFT) tasks: a prompt and a multi-token response, as the circuit-tuning paper's Llama
tasks (GSM8K, logic, reading comprehension) and ordinary fine-tuning data.

Layout of an ``SFTBatch`` (right padding, prompt then response in one row):

    input_ids      [batch, pos]   prompt tokens (through the chat template when there is one), then
                                  response tokens (ending with the end-of-turn or EOS token)
    attention_mask [batch, pos]   1 on real tokens, 0 on padding (int64, as Hugging Face expects)
    labels         [batch, pos]   = input_ids on response tokens, -100 on the prompt and on padding
                                  (Hugging Face convention: ``labels[p]`` is predicted at ``p - 1``)
    answer_mask    [batch, pos]   True on the tokens of the final answer inside the response (the
                                  text after ``#### ``, or the example's ``answer``); all False in a
                                  row whose answer could not be located (or was truncated away)
    prompt_len     [batch]        first response position = number of prompt tokens

The attribution pass reads ``clean_ids`` (= ``input_ids``) and ``attention_mask``; training and the
held-out loss read ``train_ids``/``train_mask`` (the same tensors); the ``process`` and ``outcome``
metrics read ``labels`` and ``answer_mask`` (``circuitviz.tasks.sft_metrics``). An SFT batch has no
corrupted prompt and no single target position: attribution on it uses the ``mean`` or ``zero``
baseline over ``all`` positions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
ANSWER_MARK = "####"

Overflow = Literal["truncate", "drop"]


@dataclass(frozen=True, kw_only=True)
class SFTExample:
    """One instruction example. ``answer`` (optional) is what exact-match scoring compares with;
    without it, a response that marks its final answer with ``#### `` supplies it (GSM8K style)."""

    prompt: str
    response: str
    answer: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("prompt", "response"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"SFTExample.{name} must be a non-empty string, got {value!r}")
        if self.answer is not None and (
            not isinstance(self.answer, str) or not self.answer.strip()
        ):
            raise ValueError(
                f"SFTExample.answer must be None or a non-empty string, got {self.answer!r}"
            )
        if not all(isinstance(tag, str) for tag in self.tags):
            raise ValueError(f"SFTExample.tags must be strings, got {self.tags!r}")

    @property
    def reference_answer(self) -> str | None:
        """The answer exact match compares with: ``answer``, else the response's ``#### `` text."""
        if self.answer is not None:
            return self.answer.strip()
        if ANSWER_MARK in self.response:
            from circuitviz.tasks.answers import extract_answer

            return extract_answer(self.response) or None
        return None


@dataclass(frozen=True, kw_only=True)
class SFTFormat:
    """How examples become tokens.

    chat_template: put the prompt through the tokenizer's chat template (as a user turn, the
        response as the assistant turn) when the tokenizer has one; off: plain text.
    system_prompt: an optional system turn (chat template only).
    max_length: most tokens of prompt + response; longer examples are truncated (the response is
        cut) or dropped (``overflow``), and counted either way. An example whose prompt alone fills
        ``max_length`` is always dropped.
    append_eos: without a chat template, end each response with the EOS token, so a tuned model
        learns to stop (with a template, its end-of-turn token does that).
    """

    chat_template: bool = True
    system_prompt: str | None = None
    max_length: int = 512
    overflow: Overflow = "truncate"
    append_eos: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise ValueError(f"SFTFormat.max_length must be an integer, got {self.max_length!r}")
        if self.max_length < 2:
            raise ValueError(f"SFTFormat.max_length must be >= 2, got {self.max_length}")
        if self.overflow not in ("truncate", "drop"):
            raise ValueError(
                f"SFTFormat.overflow must be 'truncate' or 'drop', got {self.overflow!r}"
            )
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(
                f"SFTFormat.system_prompt must be a string, got {self.system_prompt!r}"
            )

    def within_context(self, n_ctx: int | None) -> SFTFormat:
        """This format with ``max_length`` lowered to a model's context of ``n_ctx`` tokens (a
        longer example cannot be read at all); unchanged when it fits or ``n_ctx`` is unknown."""
        if not n_ctx or self.max_length <= n_ctx:
            return self
        log.info("max_length %d lowered to the model's context, %d tokens", self.max_length, n_ctx)
        return dataclasses.replace(self, max_length=n_ctx)


@dataclass(frozen=True, kw_only=True)
class SFTBatch:
    """Padded token ids, labels and answer positions of a batch of SFT examples (module docstring)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    answer_mask: torch.Tensor
    prompt_len: torch.Tensor

    kind = "sft"

    def __post_init__(self) -> None:
        shape = tuple(self.input_ids.shape)
        for name in ("attention_mask", "labels", "answer_mask"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"SFTBatch.{name} has shape {tuple(getattr(self, name).shape)}, "
                    f"input_ids has {shape}"
                )
        if tuple(self.prompt_len.shape) != shape[:1]:
            raise ValueError(
                f"SFTBatch.prompt_len must be [{shape[0]}], got {tuple(self.prompt_len.shape)}"
            )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    # What the attribution pass, training and the held-out loss read.
    @property
    def clean_ids(self) -> torch.Tensor:
        return self.input_ids

    @property
    def train_ids(self) -> torch.Tensor:
        return self.input_ids

    @property
    def train_mask(self) -> torch.Tensor:
        return self.attention_mask

    @property
    def response_mask(self) -> torch.Tensor:
        """``[batch, pos]`` bool: the tokens the ``process`` loss is taken on."""
        return self.labels != IGNORE_INDEX

    def to(self, device: torch.device | str) -> SFTBatch:
        return SFTBatch(**{name: getattr(self, name).to(device) for name in _FIELDS})

    def select(self, idx: torch.Tensor | Sequence[int]) -> SFTBatch:
        """The rows ``idx``, with padding columns no selected row uses trimmed away."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        rows = {name: getattr(self, name)[idx] for name in _FIELDS}
        width = int(rows["attention_mask"].sum(dim=1).max().item()) if len(idx) else 0
        for name in ("input_ids", "attention_mask", "labels", "answer_mask"):
            rows[name] = rows[name][:, :width]
        return SFTBatch(**rows)


_FIELDS = ("input_ids", "attention_mask", "labels", "answer_mask", "prompt_len")


def is_sft_batch(batch) -> bool:
    """Whether ``batch`` is an SFT batch (has labels) rather than a pair batch."""
    return getattr(batch, "labels", None) is not None


@dataclass(frozen=True, kw_only=True)
class SFTData:
    """The tokenized examples of one SFT task split, and what had to be cut or left out.

    ``examples[i]`` is row i of ``batch``. Counts: ``n_truncated`` responses cut to fit
    ``max_length``; ``n_dropped_too_long`` examples left out (prompt alone too long, or
    ``overflow="drop"``); ``n_answer_not_located`` examples with a reference answer whose tokens
    could not be found in the (kept) response, so the ``outcome`` metric cannot read them.
    ``stop_ids`` end a generated response (EOS and the template's end-of-turn token).
    """

    task: str
    split: str
    examples: tuple[SFTExample, ...]
    batch: SFTBatch
    n_truncated: int = 0
    n_dropped_too_long: int = 0
    n_answer_not_located: int = 0
    chat_template: bool = False
    stop_ids: tuple[int, ...] = ()
    max_length: int = 0
    source_fields: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.batch):
            raise ValueError(
                f"SFTData.examples has {len(self.examples)} items, batch has {len(self.batch)}"
            )

    kind = "sft"

    @property
    def n_examples(self) -> int:
        return len(self.examples)

    def __len__(self) -> int:
        return self.n_examples

    @property
    def n_with_answer(self) -> int:
        return sum(example.reference_answer is not None for example in self.examples)

    def counts(self) -> dict[str, int]:
        """What every report states next to its figures: examples kept, cut and left out."""
        return {
            "n_examples": self.n_examples,
            "n_with_answer": self.n_with_answer,
            "n_truncated": self.n_truncated,
            "n_dropped_too_long": self.n_dropped_too_long,
            "n_answer_not_located": self.n_answer_not_located,
        }

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[SFTBatch]:
        """Batches of at most ``batch_size`` rows; a shuffled order depends on ``seed`` only."""
        from circuitviz.tasks.base import row_batches

        return row_batches(self.batch, self.n_examples, batch_size, shuffle=shuffle, seed=seed)

    def subset(self, keep: torch.Tensor) -> SFTData:
        """The examples where ``keep`` ([n_examples] bool) is True, counts unchanged."""
        idx = keep.nonzero()[:, 0]
        examples = tuple(self.examples[i] for i in idx.tolist())
        return _replace(self, examples=examples, batch=self.batch.select(idx.to(self.batch.device)))

    def with_located_answers(self) -> SFTData:
        """Only the examples whose answer tokens were located: what the ``outcome`` metric reads."""
        return self.subset(self.batch.answer_mask.any(dim=1).cpu())


def _replace(data: SFTData, **changes) -> SFTData:
    from dataclasses import replace

    return replace(data, **changes)
