"""``circuitviz runs list`` and ``circuitviz runs show RUN``: what the run store holds."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from circuitviz.cli.common import UserError, print_json

LIST_COLUMNS = ("id", "status", "kind", "task", "method", "model", "steps", "created")
SUMMARY_KEYS = ("final_accuracy", "final_lm_loss", "base_lm_loss", "tuned_param_ratio")


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list recorded runs or show one")
    commands = parser.add_subparsers(dest="runs_command", metavar="SUBCOMMAND", required=True)

    list_parser = commands.add_parser("list", help="one line per run, newest first")
    _add_store_args(list_parser)
    list_parser.set_defaults(func=list_command)

    show_parser = commands.add_parser("show", help="config, status and summary of one run")
    show_parser.add_argument("run", help="a run id (see `circuitviz runs list`) or a run directory")
    _add_store_args(show_parser)
    show_parser.set_defaults(func=show_command)


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="where runs live (repeatable); default $CIRCUITVIZ_RUNS or ./runs, plus the bundled "
        "demo runs",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _store(args: argparse.Namespace):
    from pathlib import Path

    from circuitviz.runs import RunStore

    # A directory not made yet holds no runs (``tune`` makes it); a file in its place is a mistake.
    for root in args.runs_dir or ():
        if Path(root).exists() and not Path(root).is_dir():
            raise UserError(
                f"--runs-dir {root} is a file, not a directory; name the directory that holds "
                "the runs"
            )
    return RunStore(args.runs_dir) if args.runs_dir else RunStore.default()


def list_command(args: argparse.Namespace) -> int:
    store = _store(args)
    runs = store.list_runs()
    if args.json:
        print_json({"roots": store.roots, "runs": [asdict(run) for run in runs]}, nan_as_null=True)
        return 0
    if not runs:
        print(f"no runs under {', '.join(str(root) for root in store.roots)}")
        return 0
    rows = [
        (
            run.id,
            _status_text(run.status, run.live),
            run.kind,
            run.task,
            run.method,
            run.model,
            str(run.n_steps),
            run.created,
        )
        for run in runs
    ]
    print(_table(LIST_COLUMNS, rows))
    for run in runs:
        if run.status == "corrupt":
            print(f"{run.id}: {run.message}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    from circuitviz.runs import RunCorrupt, RunNotFound, RunStoreError

    try:
        run = _store(args).open(args.run)
        counts = run.counts()
    except (RunNotFound, RunCorrupt, RunStoreError) as exc:
        raise UserError(str(exc)) from exc
    payload = {
        "id": run.id,
        "dir": run.dir,
        "status": run.status,
        "status_message": run.status_message,
        "live": run.is_live(),
        "kind": run.kind,
        "task": run.task,
        "method": run.method,
        "model": run.model_spec,
        "seed": run.seed,
        "sweep_id": run.sweep_id,
        "created": run.created,
        "updated": run.updated,
        "n_edges": run.n_edges,
        "summary": run.summary,
        "counts": counts,
        "config": run.config,
        "versions": run.versions,
    }
    if args.json:
        print_json(payload, nan_as_null=True)
        return 0
    print(_show_text(payload))
    return 0


def _show_text(payload: dict) -> str:
    lines = [f"run {payload['id']}  ({payload['dir']})"]
    status = _status_text(payload["status"], payload["live"])
    if payload["status_message"]:
        status += f": {payload['status_message']}"
    lines.append(f"  status   {status}")
    for key in ("kind", "task", "method", "model", "seed", "sweep_id", "created", "updated"):
        if payload[key] is not None:
            lines.append(f"  {key:<8} {payload[key]}")
    lines.append("  counts   " + ", ".join(f"{v} {k}" for k, v in payload["counts"].items()))
    summary = payload["summary"]
    shown = [key for key in SUMMARY_KEYS if key in summary]
    shown += sorted(key for key in summary if key not in SUMMARY_KEYS)
    if shown:
        lines.append("summary")
        lines += [f"  {key:<18} {_fmt(summary[key])}" for key in shown]
    lines.append("config")
    lines += [f"  {key:<18} {_fmt(value)}" for key, value in payload["config"].items()]
    return "\n".join(lines)


def _status_text(status: str, live: bool | None) -> str:
    # A "running" run whose writer is gone was killed: say so, it can be resumed.
    return "running (no writer: killed?)" if status == "running" and live is False else status


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [tuple(header)] + [tuple("-" if c is None else str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells
    )
