"""Tasks: clean/corrupted prompt pairs, the positions a metric reads, and the metrics.

Public API (import from here; names load on first use, so ``circuitviz.tasks.catalog`` and the
CLI's help never import torch):
    Example, TaskBatch, TaskData, TaskSpec, TaskScores, TASKS, get_task, split_of
    TaskInfo, CATALOG, task_info, task_names (the torch-free catalog)
    build_task_data, load_jsonl_examples, draw_examples
    logit_diff, logprob_diff, answer_loss, METRICS
    evaluate_task, score_task
    heldout_texts, filler_texts, lm_loss
    Instruction (SFT) tasks: SFTExample, SFTFormat, SFTBatch, SFTData, SFTFields, SFTSourceError,
        build_sft_data, load_sft_jsonl, load_hf_examples, tokenize_sft, task_kind, is_sft_batch,
        process_loss, outcome_logprob, sft_loss, extract_answer, same_answer,
        SFTEvalConfig, evaluate_sft, evaluate_sft_task, NoUsableExamples
    heldout_corpus, HeldoutCorpus (the held-out text for a model: real English or demo filler)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "METRICS",
            "Example",
            "TaskBatch",
            "TaskData",
            "TaskScores",
            "TaskSpec",
            "answer_loss",
            "logit_diff",
            "logprob_diff",
            "split_of",
        ),
        "base",
    ),
    **dict.fromkeys(("CATALOG", "TaskInfo", "task_info", "task_names"), "catalog"),
    **dict.fromkeys(("build_task_data", "draw_examples", "load_jsonl_examples"), "data"),
    **dict.fromkeys(("evaluate_task", "score_task"), "evaluate"),
    **dict.fromkeys(("filler_texts", "heldout_texts", "lm_loss"), "heldout"),
    **dict.fromkeys(("TASKS", "get_task"), "registry"),
    **dict.fromkeys(("task_kind",), "catalog"),
    **dict.fromkeys(("SFTBatch", "SFTData", "SFTExample", "SFTFormat", "is_sft_batch"), "sft"),
    **dict.fromkeys(
        ("SFTFields", "SFTSourceError", "build_sft_data", "load_hf_examples", "load_sft_jsonl"),
        "sft_sources",
    ),
    **dict.fromkeys(("tokenize_sft",), "sft_tokenize"),
    **dict.fromkeys(("outcome_logprob", "process_loss", "sft_loss"), "sft_metrics"),
    **dict.fromkeys(("extract_answer", "same_answer"), "answers"),
    **dict.fromkeys(("SFTEvalConfig", "evaluate_sft", "evaluate_sft_task"), "sft_evaluate"),
    **dict.fromkeys(("NoUsableExamples",), "base"),
    **dict.fromkeys(("HeldoutCorpus", "heldout_corpus"), "corpus"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
