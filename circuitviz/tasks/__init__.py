"""Tasks: clean/corrupted prompt pairs, the positions a metric reads, and the metrics.

Public API (import from here):
    Example, TaskBatch, TaskData, TaskSpec, TaskScores, TASKS, get_task, split_of
    build_task_data, load_jsonl_examples, draw_examples
    logit_diff, logprob_diff, answer_loss, METRICS
    evaluate_task, score_task
    heldout_texts, filler_texts, lm_loss
"""

from circuitviz.tasks.base import (
    METRICS,
    Example,
    TaskBatch,
    TaskData,
    TaskScores,
    TaskSpec,
    answer_loss,
    logit_diff,
    logprob_diff,
    split_of,
)
from circuitviz.tasks.data import build_task_data, draw_examples, load_jsonl_examples
from circuitviz.tasks.evaluate import evaluate_task, score_task
from circuitviz.tasks.heldout import filler_texts, heldout_texts, lm_loss
from circuitviz.tasks.registry import TASKS, get_task

__all__ = [
    "METRICS",
    "TASKS",
    "Example",
    "TaskBatch",
    "TaskData",
    "TaskScores",
    "TaskSpec",
    "answer_loss",
    "build_task_data",
    "draw_examples",
    "evaluate_task",
    "filler_texts",
    "get_task",
    "heldout_texts",
    "lm_loss",
    "load_jsonl_examples",
    "logit_diff",
    "logprob_diff",
    "score_task",
    "split_of",
]
