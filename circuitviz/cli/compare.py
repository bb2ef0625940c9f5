"""``circuitviz compare``: tuning runs side by side, as a paper's results table."""

from __future__ import annotations

import argparse
import sys

from circuitviz.cli.common import UserError, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="tuning runs side by side: task figures, general-text loss, tuned parameters, time",
        description="One row per run, read from the run store: method, N and K or the adapters' "
        "rank, final task figures (accuracy or exact match, logit difference or response loss), "
        "the held-out general-text loss and its change, the tuned-parameter ratio, steps, wall "
        "time per step, and lm-evaluation-harness results stored by `circuitviz harness`. "
        "--json gives every figure as a list of objects (one per row, the same keys in each), "
        "--csv the same as CSV, --latex a booktabs table, --markdown a Markdown table.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids or run directories")
    parser.add_argument(
        "--base",
        action="store_true",
        help="first a row for the untouched model (from the runs' own base figures)",
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="a JSON list of objects")
    formats.add_argument("--csv", action="store_true", help="CSV with every figure")
    formats.add_argument("--latex", action="store_true", help="a LaTeX (booktabs) table")
    formats.add_argument("--markdown", action="store_true", help="a Markdown table")
    parser.add_argument(
        "--runs-dir",
        default=None,
        metavar="DIR",
        help="where runs live (default $CIRCUITVIZ_RUNS or ./runs)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuitviz.runs import RunCorrupt, RunNotFound, RunStore, RunStoreError
    from circuitviz.runs.compare import compare_rows, format_table

    store = RunStore.default(args.runs_dir)
    runs = []
    for run_id in args.runs:
        try:
            run = store.open(run_id)
        except (RunNotFound, RunCorrupt, RunStoreError) as exc:
            raise UserError(str(exc)) from exc
        if run.kind != "tune":
            raise UserError(f"run {run.id} is a {run.kind} run; compare takes tuning runs")
        runs.append(run)
    rows = compare_rows(runs, base=args.base)
    if args.json:
        print_json(rows, nan_as_null=True)
        return 0
    fmt = "csv" if args.csv else "latex" if args.latex else "markdown" if args.markdown else "text"
    sys.stdout.write(format_table(rows, fmt))
    return 0
