"""The task registry: every built-in task by name."""

from __future__ import annotations

from circuitviz.tasks.base import TaskSpec
from circuitviz.tasks.gender import GENDER_PRONOUN
from circuitviz.tasks.ioi import IOI
from circuitviz.tasks.sv import SV_AGREEMENT, SV_DISAGREEMENT

TASKS: dict[str, TaskSpec] = {
    spec.name: spec for spec in (SV_AGREEMENT, SV_DISAGREEMENT, GENDER_PRONOUN, IOI)
}


def get_task(name: str) -> TaskSpec:
    """The registered task `name`, or a ValueError listing the valid names."""
    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; choose one of {sorted(TASKS)} or pass a .jsonl file of pairs"
        )
    return TASKS[name]
