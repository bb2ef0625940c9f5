"""The Run page's form, as data: which fields each command takes, what their defaults are, and the
command line a filled form becomes.

The form sends only what the user set: a field left empty is left out of the command line, so the
task's own defaults (``circuitviz.tasks.catalog``) and the engine's apply. Defaults are shown as
placeholders: the task's where it has one, else "default".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from circuitviz.tasks.catalog import task_info

COMMANDS = {"tune": "a tuning run", "sweep": "a top-N sweep", "discover": "a circuit discovery"}
# Jobs the Run page starts outside its form (their cards name them too).
OTHER_JOBS = {"analyse": "an analysis"}
METHODS = {
    "tune": ("circuit", "full", "random", "lora", "circuit-lora"),
    "sweep": ("circuit", "random", "circuit-lora"),
    "discover": ("eap", "eap-ig"),
}


@dataclass(frozen=True, kw_only=True)
class Field:
    """One optional number: its flag, label, the config key whose default it shows, its kind."""

    flag: str
    label: str
    key: str
    name: str = ""  # how messages call it (default: the label)
    kind: str = "int"  # "int" (>= 1, or >= 0 when zero_ok), "float" (> 0), "int_list"
    zero_ok: bool = False
    help: str = ""


TUNE_FIELDS = (
    Field(flag="--top-n", label="Top-N edges", key="top_n", name="Top-N", help="edges per circuit"),
    Field(flag="--every", label="Re-discover every K steps", key="every"),
    Field(flag="--steps", label="Steps", key="steps"),
    Field(flag="--lr", label="Learning rate", key="lr", kind="float"),
    Field(flag="--eval-every", label="Evaluate every E steps", key="eval_every"),
    Field(
        flag="--snapshot-every",
        label="Circuit snapshot every S steps",
        key="snapshot_every",
        help="what the step slider shows between before and after: a run shorter than this "
        "interval shows only its first and last circuit",
    ),
    Field(
        flag="--checkpoint-every",
        label="Checkpoint every C steps",
        key="checkpoint_every",
        zero_ok=True,
        help="0: none (a run cannot be resumed or rescored without them)",
    ),
    Field(flag="--seed", label="Seed", key="seed", zero_ok=True),
    Field(
        flag="--lora-rank",
        label="LoRA rank",
        key="lora_rank",
        help="lora and circuit-lora only: the rank of each projection's update",
    ),
)
LORA_FLAGS = ("--lora-rank",)
SWEEP_TOP_N = Field(
    flag="--top-n",
    label="Top-N values (comma-separated)",
    key="top_n",
    kind="int_list",
    name="Top-N",
)
DISCOVER_FIELDS = (
    Field(flag="--top-n", label="Top-N edges", key="top_n", name="Top-N"),
    Field(flag="--seed", label="Seed", key="seed", zero_ok=True),
)


def fields_of(kind: str) -> tuple[Field, ...]:
    if kind == "discover":
        return DISCOVER_FIELDS
    if kind == "sweep":
        return (SWEEP_TOP_N, *TUNE_FIELDS[1:])
    return TUNE_FIELDS


def placeholder(field: Field, task: str) -> str:
    """What an empty field means: the task's own default, else the engine's ("default")."""
    try:
        defaults = task_info(task).tune_defaults
    except ValueError:
        defaults = {}
    if field.key in defaults:
        return f"{defaults[field.key]:g} (this task's default)"
    return "default"


def parse(field: Field, text: str) -> str | None:
    """The flag's value as the CLI takes it; None when left empty; ValueError (one line naming
    the field) when it is not a valid value."""
    text = (text or "").strip()
    if not text:
        return None
    name = field.name or field.label
    if field.kind == "float":
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number (or empty), got {text!r}")
        return f"{value:g}"
    parts = [p.strip() for p in text.split(",")] if field.kind == "int_list" else [text]
    low = 0 if field.zero_ok else 1
    if not all(p.isdigit() and int(p) >= low and len(p) < 10 for p in parts):
        what = "whole number" if low == 0 else "positive whole number"
        many = " (a comma-separated list)" if field.kind == "int_list" else ""
        raise ValueError(f"{name} must be a {what}{many} or empty, got {text!r}")
    return ",".join(str(int(p)) for p in parts)


def build_argv(
    kind: str,
    *,
    model: str,
    task: str,
    method: str,
    values: dict[str, str],
    run_id: str,
    runs_dir: str,
    output: str | None = None,
) -> list[str]:
    """The ``circuitviz`` arguments of a filled form: model, task and method always, every other
    field only when the user set it. ValueError for a bad value (nothing is started)."""
    if kind not in COMMANDS:
        raise ValueError(f"unknown command {kind!r}")
    if method not in METHODS[kind]:
        raise ValueError(f"method must be one of {METHODS[kind]} for {kind}, got {method!r}")
    model = model.strip()
    if not model or any(c in model for c in "\n\r\0"):
        raise ValueError("Model must be a model name, file or directory")
    argv = [kind, "--model", model, "--task", task, "--method", method]
    for field in fields_of(kind):
        value = parse(field, values.get(field.key, ""))
        if value is not None:
            argv += [field.flag, value]
    if "lora" not in method and any(flag in argv for flag in LORA_FLAGS):
        raise ValueError(f"LoRA rank is for the lora and circuit-lora methods, not {method}")
    if kind == "sweep" and "--top-n" not in argv:
        raise ValueError("a sweep needs its Top-N values, e.g. 10,25,50,100")
    if kind == "discover":
        argv += ["--out", str(output), "--json"]
    else:
        argv += ["--runs-dir", runs_dir]
    if kind == "tune":
        argv += ["--run-id", run_id]
    return argv


def total_steps(argv: list[str]) -> int | None:
    """The number of steps a tune job will run, when the form set it (for the progress bar)."""
    if "--steps" in argv:
        return int(argv[argv.index("--steps") + 1])
    return None
