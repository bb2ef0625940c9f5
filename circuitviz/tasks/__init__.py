"""Tasks: clean/corrupted prompt pairs, the positions a metric reads, and the metrics.

Public API (import from here; names load on first use, so ``circuitviz.tasks.catalog`` and the
CLI's help never import torch):
    Example, TaskBatch, TaskData, TaskSpec, TaskScores, TASKS, get_task, split_of
    TaskInfo, CATALOG, task_info, task_names (the torch-free catalog)
    build_task_data, load_jsonl_examples, draw_examples
    logit_diff, logprob_diff, answer_loss, METRICS
    evaluate_task, score_task
    heldout_texts, filler_texts, lm_loss
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
