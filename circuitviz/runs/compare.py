"""Runs side by side, as a paper's results table: ``circuitviz compare`` and the Dynamics page.

``compare_rows(runs)`` gives one flat record per tuning run, read from its stored config and
summary (nothing is recomputed): how it tuned (method, N and K, or the adapters' rank), the task
figures before and after (accuracy, or exact match for instruction tasks; the task metric: logit
difference, or the response loss), the held-out general-text loss and its relative change, the
tuned-parameter ratio, steps, wall time and time per step, and any lm-evaluation-harness results
stored in the run (``harness/<task>/<metric>``, the base model's as ``base_harness/...``). With
``base=True`` one row per distinct base model and task comes first, from the runs' ``base_*``
figures. ``format_table`` writes the rows as aligned text, Markdown, CSV or LaTeX (booktabs);
``compare_frame`` gives the dashboard the same table as a DataFrame. Torch-free.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

ADAPTER_METHODS = ("lora", "circuit-lora")
FORMATS = ("text", "markdown", "csv", "latex")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    style: str = "text"  # text, int, float, percent, seconds


def setting_of(method: str | None, config: dict) -> str:
    """How a run chose what to train, in a paper's words: ``N=2000, K=10``, ``r=32``, ``G=8``."""
    parts = []
    if method in ADAPTER_METHODS and config.get("lora_rank") is not None:
        parts.append(f"r={config['lora_rank']}")
    if method not in ("full", "lora") and config.get("top_n") is not None:
        if config.get("selection") == "threshold":
            parts.append(f"|s|>={config.get('threshold')}")
        else:
            parts.append(f"N={config['top_n']}")
        parts.append(f"K={config.get('every', 1)}")
    if config.get("mlp_groups") and method not in ("full", "lora"):
        parts.append(f"G={config['mlp_groups']}")
    return ", ".join(parts)


def row_of(run) -> dict:
    """One run's comparison record (see the module docstring); None where a figure is absent."""
    config, summary = run.config, run.summary
    n_steps = summary.get("n_steps")
    seconds = summary.get("seconds")
    row = {
        "run_id": run.id,
        "method": run.method,
        "setting": setting_of(run.method, config),
        "task": run.task,
        "model": run.model_spec,
        "status": run.status,
        "kind": "sft" if "final_response_loss" in summary else "pairs",
        "top_n": config.get("top_n") if run.method not in ("full", "lora") else None,
        "every": config.get("every") if run.method not in ("full", "lora") else None,
        "lora_rank": config.get("lora_rank") if run.method in ADAPTER_METHODS else None,
        "lora_alpha": config.get("lora_alpha") if run.method in ADAPTER_METHODS else None,
        "mlp_groups": config.get("mlp_groups"),
        "base_accuracy": _number(summary.get("base_accuracy")),
        "final_accuracy": _number(summary.get("final_accuracy")),
        "base_task_metric": _number(summary.get("base_task_metric")),
        "final_task_metric": _number(summary.get("final_task_metric")),
        "base_lm_loss": _number(summary.get("base_lm_loss")),
        "final_lm_loss": _number(summary.get("final_lm_loss")),
        "lm_loss_increase": _number(summary.get("lm_loss_increase")),
        "heldout_text": summary.get("heldout_text"),
        "tuned_param_ratio": _number(summary.get("tuned_param_ratio")),
        "mean_nodes": _number(summary.get("mean_nodes")),
        "n_steps": n_steps,
        "seconds": _number(seconds),
        "seconds_per_step": _number(seconds / n_steps) if seconds and n_steps else None,
        "step_seconds": _step_seconds(run),
    }
    for task, entry in sorted((summary.get("harness") or {}).items()):
        for metric, value in entry.get("metrics", {}).items():
            row[f"harness/{task}/{metric}"] = _number(value)
        for metric, value in (entry.get("base") or {}).get("metrics", {}).items():
            row[f"base_harness/{task}/{metric}"] = _number(value)
    return row


def _step_seconds(run) -> float | None:
    """Mean time of one optimizer step: discovery (when due), forward, backward and update, without
    the evaluations, snapshots and checkpoints between steps (runs record it per step)."""
    from circuitviz.runs.errors import RunCorrupt, RunStoreError

    try:
        steps = run.steps()
    except (RunCorrupt, RunStoreError):  # a damaged table: no figure rather than no row
        return None
    if "seconds" not in steps or not len(steps):
        return None
    return _number(float(steps["seconds"].astype(float).mean()))


def base_row(row: dict) -> dict:
    """The untouched model's record, from a run's ``base_*`` figures."""
    out = {key: None for key in row}
    out.update(
        run_id=None,
        method="base",
        setting="",
        task=row["task"],
        model=row["model"],
        status="",
        kind=row["kind"],
        heldout_text=row["heldout_text"],
        final_accuracy=row["base_accuracy"],
        base_accuracy=row["base_accuracy"],
        final_task_metric=row["base_task_metric"],
        base_task_metric=row["base_task_metric"],
        final_lm_loss=row["base_lm_loss"],
        base_lm_loss=row["base_lm_loss"],
        lm_loss_increase=0.0 if row["base_lm_loss"] is not None else None,
        tuned_param_ratio=0.0,
    )
    for key, value in row.items():
        if key.startswith("base_harness/"):
            out[key.removeprefix("base_")] = value
            out[key] = value
    return out


def compare_rows(runs, *, base: bool = False) -> list[dict]:
    """The records of ``runs`` (``Run`` objects, in the order given), every record with the same
    keys; with ``base``, first one base row per distinct (model, task)."""
    rows = [row_of(run) for run in runs]
    if base:
        seen, bases = set(), []
        for row in rows:
            if (row["model"], row["task"]) not in seen:
                seen.add((row["model"], row["task"]))
                bases.append(base_row(row))
        rows = bases + rows
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [{key: row.get(key) for key in keys} for row in rows]


def table_columns(rows: list[dict]) -> list[Column]:
    """The columns a printed table shows: names follow the task kind when all rows share one."""
    kinds = {row["kind"] for row in rows}
    sft, pairs = kinds == {"sft"}, kinds == {"pairs"}
    accuracy = "exact match" if sft else "accuracy" if pairs else "task accuracy"
    metric = "response loss" if sft else "logit diff" if pairs else "task metric"
    columns = [
        Column("method", "method"),
        Column("setting", "N, K / rank"),
        Column("final_accuracy", accuracy, "float"),
        Column("final_task_metric", metric, "float"),
        Column("final_lm_loss", "held-out loss", "float"),
        Column("lm_loss_increase", "change", "percent"),
        Column("tuned_param_ratio", "tuned params", "float"),
        Column("n_steps", "steps", "int"),
        Column("step_seconds", "s/step", "seconds"),
    ]
    harness = [key for key in rows[0] if key.startswith("harness/")] if rows else []
    columns += [
        Column(key, key.removeprefix("harness/").replace("/", " "), "float") for key in harness
    ]
    if len({row["run_id"] for row in rows if row["run_id"]}) > 0:
        columns.insert(0, Column("run_id", "run"))
    return columns


def format_table(rows: list[dict], fmt: str) -> str:
    """``rows`` as ``text``, ``markdown``, ``csv`` (every key) or ``latex`` (booktabs)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return buffer.getvalue()
    columns = table_columns(rows)
    cells = [[_cell(row.get(c.key), c.style) for c in columns] for row in rows]
    headers = [c.header for c in columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        return _latex(headers, cells, columns)
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines) + "\n"


def _latex(headers: list[str], cells: list[list[str]], columns: list[Column]) -> str:
    align = "".join("l" if c.style == "text" else "r" for c in columns)
    lines = [
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(_tex(h) for h in headers) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(_tex(c) for c in line) + " \\\\" for line in cells]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_TEX = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)


def _cell(value, style: str) -> str:
    if value is None:
        return "-"
    if style == "int":
        return f"{int(value):d}"
    if style == "float":
        return f"{value:.3f}"
    if style == "percent":
        return f"{100 * value:+.1f}%"
    if style == "seconds":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _number(value):
    """A finite float, or None (a NaN or a missing figure is no number to show)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def compare_frame(rows: list[dict]):
    """``rows`` as a pandas DataFrame under the printed table's headers (numbers kept numeric, so
    a dashboard can sort them; the change in percent)."""
    import pandas as pd

    columns = table_columns(rows)
    data = {}
    for column in columns:
        values = [row.get(column.key) for row in rows]
        if column.style == "percent":
            values = [None if v is None else 100 * v for v in values]
        data[column.header + (" (%)" if column.style == "percent" else "")] = values
    return pd.DataFrame(data)
