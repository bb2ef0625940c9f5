"""``circuitviz analyse``: the mechanisms of a run at each checkpoint, written into its store."""

from __future__ import annotations

import argparse
import sys

from circuitviz.cli.common import UserError, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyse",
        help="analyse a run's checkpoints: direct logit attribution per head and MLP, and the "
        "faithfulness of its circuits over time (written into the run store)",
        description="For the untouched model and every checkpoint of RUN: each node's direct "
        "logit attribution on the run's probe set, and the faithfulness at each edge budget of "
        "the circuit the run held then and of the circuit it started from. Results go into the "
        "run store (the run itself is unchanged); --json prints a summary.",
    )
    parser.add_argument("run", help="a run id or run directory")
    parser.add_argument(
        "--only",
        default="dla,faithfulness",
        metavar="KINDS",
        help="comma-separated analyses: dla, faithfulness (default: both)",
    )
    parser.add_argument(
        "--budgets",
        default="0.01,0.1",
        metavar="FRACTIONS",
        help="edge budgets of the faithfulness analysis, as fractions of the graph's edges "
        "(default: 0.01,0.1)",
    )
    parser.add_argument("--probe-size", type=int, default=None, help="default: the run's n_probe")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--runs-dir", default=None, help="where runs live (default $CIRCUITVIZ_RUNS or ./runs)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=analyse_command)


def analyse_command(args: argparse.Namespace) -> int:
    from circuitviz.analysis.over_time import analyse_run, summarise_analyses
    from circuitviz.cli.tune import _engine_errors
    from circuitviz.models import ModelLoadError, load_model
    from circuitviz.runs import RunStore

    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError as exc:
        raise UserError(
            f"--budgets takes fractions such as 0.01,0.1, got {args.budgets!r}"
        ) from exc
    try:
        run = RunStore.default(args.runs_dir).open(args.run)
    except _engine_errors() as exc:
        raise UserError(str(exc)) from exc
    if run.is_live():
        raise UserError(f"run {run.id} is being written by another process; wait for it to end")
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(unit="checkpoint", file=sys.stderr, dynamic_ncols=True, desc="analyse")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    dtype = str(run.config.get("dtype", "float32")).removeprefix("torch.")
    try:
        model = load_model(run.model_spec, device=args.device, dtype=dtype)
        analyse_run(
            model, run, kinds=kinds, budgets=budgets, probe_size=args.probe_size, progress=progress
        )
    except (ModelLoadError, *_engine_errors()) as exc:
        raise UserError(str(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    summary = summarise_analyses(run.refresh())
    if args.json:
        print_json(summary)
        return 0
    print(f"analysed run {run.id} at steps {summary['steps']} (read them with Run.analyses())")
    for name, values in summary.get("dla", {}).get("sign_flips", {}).items():
        print(f"  DLA sign flip  {name:12s} {values['first']:+.3f} -> {values['last']:+.3f}")
    for budget, rows in summary.get("faithfulness_over_time", {}).items():
        cells = ", ".join(
            f"{r['step']}: {_cell(r.get('own'))}/{_cell(r.get('initial'))}" for r in rows
        )
        print(f"  faithfulness at {budget} of edges (own/initial circuit): {cells}")
    return 0


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}"
