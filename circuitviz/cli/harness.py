"""``circuitviz harness``: lm-evaluation-harness benchmarks on a tuning run's model (stored in the run,
where ``compare`` and the dashboard show them) or on any model spec."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from circuitviz.cli.common import UserError, print_json
from circuitviz.models.spec import DTYPE_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "harness",
        help="run lm-evaluation-harness tasks on a run's tuned model (stored in the run) or a model",
        description="Evaluate RUN's final weights (run:RUN@STEP for a checkpoint) or any model "
        "spec on lm-evaluation-harness tasks, in this process. Results on a run are stored in "
        "it (summary.harness), so `circuitviz compare` and the Dynamics page show them beside "
        "the run's own figures. Offline, hub datasets are unreachable: tasks on local files run "
        "(circuitviz's own circuitviz_sv_agreement, or --include-path DIR with your task YAML), "
        "and a task whose dataset cannot be loaded stops with one line naming it.",
    )
    parser.add_argument(
        "target", metavar="RUN|MODEL", help="a run id, run:RUN[@STEP], or a model spec"
    )
    parser.add_argument(
        "--tasks", required=True, metavar="T1,T2", help="comma-separated task or group names"
    )
    parser.add_argument(
        "--limit", type=float, default=None, help="documents per task (below 1: a fraction)"
    )
    parser.add_argument(
        "--num-fewshot", type=int, default=None, metavar="K", help="default: each task's own"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="default 8")
    parser.add_argument(
        "--include-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of task YAML files of your own (repeatable)",
    )
    parser.add_argument(
        "--chat-template", action="store_true", help="put prompts through the chat template"
    )
    parser.add_argument(
        "--with-base",
        action="store_true",
        help="for a run: also evaluate the model it tuned, stored beside its own figures",
    )
    parser.add_argument(
        "--no-record", action="store_true", help="for a run: print the results, store nothing"
    )
    parser.add_argument("--seed", type=int, default=0, help="lm-eval's seeds (default 0)")
    parser.add_argument(
        "--runs-dir", default=None, metavar="DIR", help="where runs live (default ./runs)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)"
    )
    parser.add_argument(
        "--dtype", default=None, choices=DTYPE_NAMES, help="default float32 (a run: its own)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuitviz.harness import HarnessConfig, HarnessError, resolve_tasks

    if not getattr(args, "verbose", False):  # lm-eval warns about in-memory models at length
        logging.getLogger("lm_eval").setLevel(logging.ERROR)

    try:
        config = HarnessConfig(
            tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
            limit=None if args.limit is None else _limit(args.limit),
            num_fewshot=args.num_fewshot,
            batch_size=args.batch_size,
            include_path=tuple(args.include_path),
            apply_chat_template=args.chat_template,
            seed=args.seed,
        )
    except ValueError as exc:
        raise UserError(str(exc).replace("HarnessConfig.", "--").replace("_", "-")) from exc
    spec, run = _target(args)
    if (args.with_base or args.no_record) and run is None:
        flag = "--with-base" if args.with_base else "--no-record"
        raise UserError(f"{flag} applies to a run; {args.target!r} is a model spec")
    if run is not None and not args.no_record:
        if not os.access(run.dir, os.W_OK):
            raise UserError(
                f"run {run.id} is read-only ({run.dir}); pass --no-record to print the results only"
            )
        if run.is_live():
            raise UserError(f"run {run.id} is being written by another process; wait for it")
    _offline_if_unreachable()
    try:
        manager = resolve_tasks(config)
        results = _evaluate(spec, config, manager, args)
        base = None
        if args.with_base:
            base = _evaluate(run.config.get("model") or run.model_spec, config, manager, args)
    except HarnessError as exc:
        raise UserError(str(exc)) from exc
    step = results.pop("_step", None)
    if base is not None:
        base.pop("_step", None)
    recorded = False
    if run is not None and not args.no_record:
        recorded = _record(run, spec, step, results, base)
    payload = {
        "target": args.target,
        "model": spec,
        "run_id": None if run is None else run.id,
        "step": step,
        "tasks": results,
        "base": base,
        "recorded": recorded,
    }
    if args.json:
        print_json(payload, nan_as_null=True)
    else:
        _print_table(payload)
    return 0


def _limit(value: float) -> float | int:
    return int(value) if value >= 1 and value == int(value) else value


def _target(args: argparse.Namespace):
    """(model spec, Run or None) of the positional argument: ``run:...``, a run id in the store,
    or else a model spec."""
    from circuitviz.models.runspec import parse_run_spec
    from circuitviz.runs import RunNotFound, RunStore, RunStoreError

    store = RunStore.default(args.runs_dir)
    target = args.target.strip()
    if target.startswith("run:"):
        run_id, _ = parse_run_spec(target)
        spec = target
    elif target in store.run_dirs() or Path(target, "run.sqlite").is_file():
        run_id, spec = target, f"run:{target}"
    else:
        return target, None
    try:
        return spec, store.open(run_id)
    except (RunNotFound, RunStoreError) as exc:
        raise UserError(str(exc)) from exc


def _offline_if_unreachable() -> None:
    """Without a network, the datasets library retries a hub dataset for half a minute before it
    fails; in offline mode it fails (or finds its cached copy) at once."""
    from circuitviz.tasks.sft_sources import _hub_unreachable

    if _hub_unreachable() is not None:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"


def _evaluate(spec: str, config, manager, args) -> dict:
    from circuitviz.harness import run_harness
    from circuitviz.models import ModelLoadError, load_model

    try:
        model = load_model(spec, device=args.device, dtype=args.dtype, runs_dir=args.runs_dir)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc
    results = run_harness(model, config, manager=manager)
    results["_step"] = (model.origin or {}).get("step")
    return results


def _record(run, spec: str, step, results: dict, base: dict | None) -> bool:
    from circuitviz.runs import RunStoreError
    from circuitviz.runs.writer import add_to_summary

    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entries = {}
    for task, record in results.items():
        entry = {**record, "model": spec, "step": step, "date": when}
        if base is not None and task in base:
            entry["base"] = base[task]
        entries[task] = entry
    try:
        add_to_summary(run.dir, "harness", entries)
    except RunStoreError as exc:
        raise UserError(f"{exc}; the results were not stored (rerun with --no-record)") from exc
    return True


def _print_table(payload: dict) -> None:
    where = payload["model"] + ("" if payload["step"] is None else f" (step {payload['step']})")
    print(f"lm-evaluation-harness on {where}")
    for task, record in payload["tasks"].items():
        base = (payload["base"] or {}).get(task, {}).get("metrics", {})
        for metric, value in record["metrics"].items():
            err = record["stderr"].get(metric)
            shown = "n/a" if value is None else f"{value:.4f}"
            if err is not None:
                shown += f" ± {err:.4f}"
            if metric in base and base[metric] is not None:
                shown += f"  (base {base[metric]:.4f})"
            print(f"  {task:<28} {metric:<24} {shown}  n={record['n']}")
    if payload["recorded"]:
        print(f"stored in run {payload['run_id']} (circuitviz compare shows it)", file=sys.stdout)
