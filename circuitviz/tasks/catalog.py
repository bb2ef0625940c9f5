"""What each built-in task is, without building any of it: names, kinds, descriptions, and the
tuning settings that differ by task.

This module imports no torch, so the CLI's ``--help``, the dashboard's Run page and the task
registry all read the same entries; ``task_kind`` says which kind any task spec is (a built-in name,
a pair file, ``sft:PATH`` or ``hf:...``). The registry (``circuitviz.tasks.registry``) adds what it
takes to generate and score examples; a task is listed here exactly when it is registered there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

TaskKind = Literal["pairs", "sft"]


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """One built-in task.

    kind: ``pairs`` (clean/corrupted prompts with a one-token answer) or ``sft`` (a prompt and a
        multi-token response).
    original_task: the task whose circuit circuit-tuning draws as "before" (sv-disagreement ->
        sv-agreement); None when the task is its own original.
    tune_defaults: ``TuneConfig`` fields whose default differs for this task; a user's own value
        always wins. The one place a task-specific default lives.
    """

    name: str
    kind: TaskKind = "pairs"
    description: str
    original_task: str | None = None
    tune_defaults: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskInfo.name must be a non-empty string")
        if self.kind not in ("pairs", "sft"):
            raise ValueError(f"TaskInfo.kind must be 'pairs' or 'sft', got {self.kind!r}")
        object.__setattr__(self, "tune_defaults", MappingProxyType(dict(self.tune_defaults)))


CATALOG: dict[str, TaskInfo] = {
    info.name: info
    for info in (
        TaskInfo(
            name="sv-agreement",
            description="The verb must agree with the subject's number, across attractor nouns "
            "and relative clauses.",
        ),
        TaskInfo(
            name="sv-disagreement",
            description="The circuit-tuning paper's task: produce the verb of the *other* number. "
            "Prompts and corruptions are sv-agreement's.",
            original_task="sv-agreement",
        ),
        TaskInfo(
            name="gender-pronoun",
            description="Occupations and pronouns, scored as the preference for the stereotyped "
            "pronoun (a bias: lower is fairer, 0.5 is indifferent).",
            # De-biasing trains on balanced sentences (either pronoun, as the paper's balanced
            # corpus) with the paper's regulariser on the stereotyped-minus-other logit gap, at a
            # gentle rate and with a small circuit: on the demo model the stereotyped preference
            # reaches 0.5 within 50 steps while the held-out LM loss, which creeps up as training
            # goes on, stays within a few percent.
            tune_defaults={
                "answer_swap": 0.5,
                "debias_beta": 0.5,
                "lr": 0.003,
                "top_n": 50,
                "steps": 400,
            },
        ),
        TaskInfo(
            name="ioi",
            description="Indirect-object identification: after 'When Mary and John went to the "
            "store, John gave a drink to', predict the name that was not repeated.",
        ),
        TaskInfo(
            name="arithmetic",
            kind="sft",
            description="Word problems with one to three steps of integer arithmetic; the "
            "response works the steps and ends '#### <answer>' (GSM8K's format), scored by "
            "exact match of the generated answer.",
            # The paper's Llama setting re-discovers the circuit less often than every step;
            # with a real model's seconds per attribution, every 10 steps keeps a 300-step run
            # near an hour on two CPU cores (the pretrained-model defaults set the rest).
            tune_defaults={"every": 10},
        ),
    )
}


# What every task of a kind changes: an instruction (SFT) task has no corrupted prompt and no one
# answer position, so its circuit is found with the fine-tuning loss itself (the paper's "process"
# metric), every position mean-ablated.
KIND_TUNE_DEFAULTS: dict[str, dict] = {
    "pairs": {},
    "sft": {"attribution": {"metric": "process", "baseline": "mean", "positions": "all"}},
}


def task_kind(task: str) -> TaskKind:
    """The kind of any task spec: a built-in name (its catalog kind), ``sft:PATH`` and
    ``hf:NAME[:CONFIG][:SPLIT]`` (instruction data) or a ``.jsonl`` file of pairs. Raises ValueError
    for anything else, listing what is accepted."""
    if task.startswith(("sft:", "hf:")):
        return "sft"
    if task.endswith(".jsonl"):
        return "pairs"
    if task in CATALOG:
        return CATALOG[task].kind
    raise ValueError(
        f"unknown task {task!r}; choose one of {task_names()}, a .jsonl file of pairs, "
        "sft:FILE.jsonl (prompt/response) or hf:DATASET[:CONFIG][:SPLIT]"
    )


def task_names() -> list[str]:
    """The built-in tasks, sorted."""
    return sorted(CATALOG)


def task_info(name: str) -> TaskInfo:
    """The catalog entry of a built-in task, or a ValueError listing the valid names."""
    if name not in CATALOG:
        raise ValueError(
            f"unknown task {name!r}; choose one of {task_names()} or pass a .jsonl file of pairs"
        )
    return CATALOG[name]
