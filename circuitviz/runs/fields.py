"""What goes into a run's records: the allowed values, and checking and converting arguments.

Validation lives here so that ``RunWriter`` reads as a list of transactions; every check raises a
ValueError naming the argument and the bad value before anything is written.
"""

from __future__ import annotations

import math
import platform
import re
import secrets
import sqlite3
from datetime import datetime, timezone
from importlib import metadata
from pathlib import PurePath

import numpy as np

from circuitviz.runs import schema

KINDS = ("tune", "sweep", "discover")
STATUSES = ("running", "finished", "failed", "stopped")
LABELS = ("before", "during", "after")
HEAD_KINDS = ("q", "k", "v", "o", "mlp")
GRAPH_META_KEYS = ("n_layers", "n_heads", "n_kv_heads", "paper", "edge_names", "n_model_params")
STEP_COLUMNS = (
    "loss",
    "lr",
    "top_n",
    "n_nodes",
    "n_edges",
    "tuned_params_whole",
    "tuned_params_exact",
    "tuned_ratio",
    "discovered",
)
EVAL_COLUMNS = ("accuracy", "task_metric", "lm_loss")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROBE_RE = re.compile(r"^(fixed|resample-\d+)$")


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def new_run_id(*parts: str) -> str:
    """The one id generator for runs, sweeps and dashboard jobs: the slugged parts, the local time
    and 4 hex digits, e.g. ``new_run_id("sv-disagreement", "circuit")`` ->
    ``sv-disagreement-circuit-20261123-141502-9f3a``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join([*(slug(part) for part in parts), stamp, secrets.token_hex(2)])


def task_slug(task: str) -> str:
    """A short run-id part for a task spec: a built-in name as it is, a file by its stem
    (``sft:data/train.jsonl`` -> ``sft-train``), a dataset by its last name
    (``hf:openai/gsm8k:main`` -> ``hf-gsm8k``)."""
    kind, sep, rest = task.partition(":")
    if sep and kind in ("sft", "hf"):
        name = rest.split(":")[0] if kind == "hf" else rest
        stem = PurePath(name).name.removesuffix(".jsonl").removesuffix(".json")
        return f"{kind}-{stem}"
    if task.endswith(".jsonl"):
        return PurePath(task).name.removesuffix(".jsonl")
    return task


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise ValueError(
            f"run_id must be 1-128 letters, digits, '.', '_' or '-' not starting with a symbol, "
            f"got {run_id!r}"
        )
    return run_id


def software_versions() -> dict[str, str | None]:
    """Versions from package metadata, so recording them never imports torch."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("circuitviz", "torch", "transformer-lens", "transformers", "numpy", "safetensors"):
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    versions["sqlite"] = sqlite3.sqlite_version
    return versions


def check_create_args(kind, config, model_spec, task, method, seed, graph_meta, sweep_id) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for name, value in (("model_spec", model_spec), ("task", task), ("method", method)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    schema.dump_json(config)  # fail now, not half-way, if it is not JSON-serialisable
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if sweep_id is not None and not isinstance(sweep_id, str):
        raise ValueError(f"sweep_id must be a string or None, got {sweep_id!r}")
    if not isinstance(graph_meta, dict):
        raise ValueError(f"graph_meta must be a dict, got {type(graph_meta).__name__}")
    missing = [key for key in GRAPH_META_KEYS if key not in graph_meta]
    if missing:
        raise ValueError(f"graph_meta lacks {missing} (needs {list(GRAPH_META_KEYS)})")
    names = graph_meta["edge_names"]
    if (
        not isinstance(names, list | tuple)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError("graph_meta['edge_names'] must be a non-empty list of edge names")


def to_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def to_float(value) -> float | None:
    if value is None:
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return None if math.isnan(value) else value


def extra_json(extra: dict, reserved: tuple[str, ...]) -> str:
    clash = [key for key in extra if key in reserved or key in ("step", "time")]
    if clash:
        raise ValueError(f"extra fields {clash} clash with fixed columns")
    clean = {}
    for key, value in extra.items():
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, str | int | float | bool | type(None)):
            raise ValueError(f"extra field {key!r} must be a scalar, got {type(value).__name__}")
        clean[key] = value
    return schema.dump_json(clean)


def slug(text: str) -> str:
    """A piece of a run id: letters, digits, '.', '-' kept (so ``sv-disagreement`` stays as it is),
    any other run of characters (a path's '/', a space) becomes '_'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.-") or "run"


def edge_vector(values, name: str, dtype, n_edges: int) -> np.ndarray:
    """A tensor or array of one value per valid edge as a numpy vector of ``dtype``."""
    if hasattr(values, "detach"):  # a torch tensor, converted without importing torch
        values = values.detach().to("cpu")
        if values.dtype.is_floating_point:
            values = values.float()  # bfloat16 has no numpy dtype
        values = values.numpy()
    arr = np.asarray(values)
    if arr.shape != (n_edges,):
        raise ValueError(
            f"{name} must have shape ({n_edges},) (one value per valid edge, in "
            f"Graph.edge_index() order), got {arr.shape}"
        )
    if dtype == np.bool_ and arr.dtype != np.bool_:
        raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)
