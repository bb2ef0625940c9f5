"""Score a model on an SFT task: response loss and exact match of generated answers.

1. ``response_loss``: the mean negative log-likelihood per response token over every example
   (teacher forcing on the reference response; token-weighted across examples), in nats.
2. ``exact_match``: for every example with a reference answer, the model generates a response to
   the prompt alone (greedy, batched, at most ``max_new_tokens`` new tokens, stopping at EOS or the
   chat template's end-of-turn token); its answer is extracted (``answers.extract_answer``: text
   after ``####``, else the last number, else the whole response) and compared with the reference
   (``answers.same_answer``). Examples carrying tags (``steps=2``) also get an exact match per tag.
3. The counts of ``SFTData`` (kept, truncated, dropped, answer not located) come with the figures.

No usable example is an error (``NoUsableExamples``), never NaN; with examples but no reference
answer, ``exact_match`` is None (JSON null) and only the loss is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from circuitviz.models.plain import plain_hf_model
from circuitviz.tasks.answers import extract_answer, same_answer
from circuitviz.tasks.base import NoUsableExamples
from circuitviz.tasks.generate import greedy_generate
from circuitviz.tasks.sft import SFTData
from circuitviz.tasks.sft_metrics import response_nll
from circuitviz.tasks.sft_tokenize import pad_id_of


@dataclass(frozen=True, kw_only=True)
class SFTEvalConfig:
    """max_new_tokens: the bound on each generated response. batch_size: rows per forward and per
    generation batch. exact_match: generate and compare answers (off: response loss only).
    n_samples: how many (prompt, generated, extracted, reference) examples the report shows."""

    max_new_tokens: int = 128
    batch_size: int = 16
    exact_match: bool = True
    n_samples: int = 3

    def __post_init__(self) -> None:
        for name, low in (("max_new_tokens", 1), ("batch_size", 1), ("n_samples", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SFTEvalConfig.{name} must be an integer >= {low}, got {value!r}")


@torch.no_grad()
def response_loss(model, data: SFTData, *, batch_size: int = 16) -> float:
    """Mean nll per response token over ``data`` (teacher forcing), in nats."""
    plain = plain_hf_model(model)  # the same weights without the bridge's hooks
    total, count = 0.0, 0
    for batch in data.batches(batch_size):
        batch = batch.to(model.device)
        logits = plain(batch.input_ids, attention_mask=batch.attention_mask).logits
        summed, n = response_nll(logits, batch)
        total += float(summed.sum())
        count += int(n.sum())
    if count == 0:
        raise NoUsableExamples(f"task {data.task} ({data.split}): no response token to score")
    return total / count


def generate_responses(model, data: SFTData, config: SFTEvalConfig, rows: list[int]) -> list[str]:
    """Greedy responses (decoded, special tokens dropped) to the prompts of ``rows``."""
    ids, lengths = data.batch.input_ids.cpu(), data.batch.prompt_len.cpu()
    prompts = [ids[i, : int(lengths[i])].tolist() for i in rows]
    tokens = greedy_generate(
        model,
        prompts,
        max_new_tokens=config.max_new_tokens,
        stop_ids=data.stop_ids,
        pad_id=pad_id_of(model.tokenizer),
        batch_size=config.batch_size,
    )
    return [model.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


def exact_match_report(model, data: SFTData, config: SFTEvalConfig) -> dict[str, Any]:
    """``exact_match`` over the examples with a reference answer, per tag, and a few samples."""
    rows = [i for i, ex in enumerate(data.examples) if ex.reference_answer is not None]
    if not rows:
        return {"exact_match": None}
    texts = generate_responses(model, data, config, rows)
    hits = [same_answer(text, data.examples[i].reference_answer) for i, text in zip(rows, texts)]
    report: dict[str, Any] = {"exact_match": sum(hits) / len(hits)}
    tags = sorted({tag for i in rows for tag in data.examples[i].tags})
    for tag in tags:
        mine = [hit for i, hit in zip(rows, hits) if tag in data.examples[i].tags]
        report[f"exact_match[{tag}]"] = sum(mine) / len(mine)
    report["samples"] = [
        {
            "prompt": data.examples[i].prompt,
            "generated": text,
            "extracted": extract_answer(text),
            "reference": data.examples[i].reference_answer,
            "correct": hit,
        }
        for i, text, hit in list(zip(rows, texts, hits))[: config.n_samples]
    ]
    return report


def evaluate_sft(model, data: SFTData, config: SFTEvalConfig | None = None) -> dict[str, Any]:
    """Response loss, exact match and the data's counts (see the module docstring)."""
    config = config or SFTEvalConfig()
    if data.n_examples == 0:
        raise NoUsableExamples(
            f"task {data.task} ({data.split}): no usable example ({data.n_dropped_too_long} "
            f"dropped as longer than max_length={data.max_length}); raise the max length, use "
            "another split (or --split all), or check the source"
        )
    result: dict[str, Any] = {"task": data.task, "split": data.split, "kind": "sft"}
    result.update(data.counts())
    result["chat_template"] = data.chat_template
    result["response_loss"] = response_loss(model, data, batch_size=config.batch_size)
    if config.exact_match:
        result.update(exact_match_report(model, data, config))
    return result


def evaluate_sft_task(
    model,
    task: str,
    *,
    split: str = "test",
    n: int | None = 256,
    seed: int = 0,
    fmt=None,
    fields=None,
    config: SFTEvalConfig | None = None,
) -> dict[str, Any]:
    """Build the data of an SFT task spec (``arithmetic``, ``sft:PATH``, ``hf:...``) with the
    model's tokenizer and evaluate it (``evaluate_sft``); the column mapping of a dataset is
    reported as ``fields``."""
    from circuitviz.tasks.sft_sources import build_sft_data

    data = build_sft_data(
        task, model.tokenizer, split=split, n=n, seed=seed, fmt=fmt, fields=fields, device="cpu"
    )
    result = evaluate_sft(model, data, config)
    if data.source_fields:
        result["fields"] = dict(data.source_fields)
    return result
