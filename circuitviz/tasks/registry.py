"""The task registry: every built-in task by name (its catalog entry says what it is)."""

from __future__ import annotations

from circuitviz.tasks.base import TaskSpec
from circuitviz.tasks.catalog import CATALOG, task_info
from circuitviz.tasks.gender import GENDER_PRONOUN
from circuitviz.tasks.ioi import IOI
from circuitviz.tasks.sv import SV_AGREEMENT, SV_DISAGREEMENT

TASKS: dict[str, TaskSpec] = {
    spec.name: spec for spec in (SV_AGREEMENT, SV_DISAGREEMENT, GENDER_PRONOUN, IOI)
}
if set(TASKS) != {name for name, info in CATALOG.items() if info.kind == "pairs"}:
    raise RuntimeError("circuitviz.tasks: the registry and the catalog list different pair tasks")
SFT_TASKS: tuple[str, ...] = ("arithmetic",)  # generated in circuitviz.tasks.sft_sources
if set(SFT_TASKS) != {name for name, info in CATALOG.items() if info.kind == "sft"}:
    raise RuntimeError("circuitviz.tasks: the registry and the catalog list different SFT tasks")


def get_task(name: str) -> TaskSpec:
    """The registered pair task `name`, or a ValueError listing the valid names."""
    info = task_info(name)  # the catalog's message for an unknown name
    if info.kind != "pairs":
        raise ValueError(
            f"task {name!r} is an instruction (SFT) task, not a pair task: build its data with "
            "circuitviz.tasks.build_sft_data"
        )
    return TASKS[name]
