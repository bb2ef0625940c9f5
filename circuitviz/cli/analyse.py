"""``circuitviz analyse``: the mechanisms of a run at each checkpoint, written into its store."""

from __future__ import annotations

import argparse
import sys

from circuitviz.cli.common import UserError, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyse",
        help="analyse a run's checkpoints: direct logit attribution per head and MLP, head roles, "
        "attention to the task's tokens, and the faithfulness of its circuits over time (written "
        "into the run store)",
        description="For the untouched model and every checkpoint of RUN: each node's direct "
        "logit attribution on the run's probe set; each head's previous-token, duplicate-token, "
        "induction and copying scores; its attention from the target to the tokens the corrupted "
        "prompt changes; and the faithfulness at each edge budget of the circuit the run held "
        "then and of the circuit it started from. Results go into the run store (the run itself "
        "is unchanged); --json prints a summary.",
    )
    parser.add_argument("run", help="a run id or run directory")
    parser.add_argument(
        "--only",
        default=None,
        metavar="KINDS",
        help="comma-separated analyses: dla, faithfulness, roles, attention, ov, bias, alignment "
        "(with --against) (default: every one the task allows; instruction tasks have no answer "
        "token, so no dla or attention; bias is the gender task's)",
    )
    parser.add_argument(
        "--budgets",
        default="0.01,0.1",
        metavar="FRACTIONS",
        help="edge budgets of the faithfulness analysis, as fractions of the graph's edges "
        "(default: 0.01,0.1)",
    )
    parser.add_argument(
        "--against",
        metavar="OTHER",
        default=None,
        help="also compare RUN's circuits with those of run OTHER (same model) at every step both "
        "have a snapshot: edge and node IoU at each budget, and the edges one strengthens and the "
        "other does not; --only alignment does just that, without loading the model",
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
    from circuitviz.analysis.alignment import diverging_edges
    from circuitviz.analysis.over_time import (
        analyse_run,
        check_budgets,
        check_request,
        store_alignment,
        summarise_analyses,
    )
    from circuitviz.cli.tune import _engine_errors
    from circuitviz.models import ModelLoadError, load_model
    from circuitviz.runs import RunStore

    kinds = None if args.only is None else [k.strip() for k in args.only.split(",") if k.strip()]
    aligning = args.against is not None
    if kinds is not None and "alignment" in kinds:
        if not aligning:
            raise UserError("--only alignment compares two runs: name the other with --against RUN")
        kinds.remove("alignment")
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError as exc:
        raise UserError(
            f"--budgets takes fractions such as 0.01,0.1, got {args.budgets!r}"
        ) from exc
    try:
        store = RunStore.default(args.runs_dir)
        run = store.open(args.run)
        other = store.open(args.against) if aligning else None
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
    try:  # every request checked before anything is written
        check_budgets(budgets)
        if kinds:
            check_request(run, kinds, budgets)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    try:
        if other is not None:
            store_alignment(run, other, budgets)
        if kinds is None or kinds:
            model = load_model(run.model_spec, device=args.device, dtype=dtype)
            analyse_run(
                model,
                run,
                kinds=kinds,
                budgets=budgets,
                probe_size=args.probe_size,
                progress=progress,
            )
    except (ModelLoadError, *_engine_errors()) as exc:
        raise UserError(str(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    summary = summarise_analyses(run.refresh())
    if other is not None:  # computed from the two stores, not stored
        table = diverging_edges(run, other, top=10)
        summary["diverging_edges"] = {
            "strengthened_here_not_in": other.id,
            "edges": [
                {"edge": row.edge, "change_here": row.change_a, "change_there": row.change_b}
                for row in table.itertuples()
            ],
        }
    if args.json:
        print_json(summary)
        return 0
    print(f"analysed run {run.id} at steps {summary['steps']} (read them with Run.analyses())")
    for role, held in summary.get("roles", {}).items():
        if held["holder_first"] is None and held["holder_last"] is None:
            print(f"  {role:16s} held by no head (every score under the floor)")
            continue
        moved = f" -> {held['holder_last']} (migrated)" if held["migrated"] else ""
        print(f"  {role:16s} held by {held['holder_first'] or 'no head'}{moved}")
    for name, values in summary.get("dla", {}).get("sign_flips", {}).items():
        print(f"  DLA sign flip  {name:12s} {values['first']:+.3f} -> {values['last']:+.3f}")
    for other_id, by_budget in summary.get("alignment", {}).items():
        for budget, rows in by_budget.items():
            cells = ", ".join(f"{r['step']}: {r['edge_iou']:.2f}" for r in rows)
            print(f"  edge IoU with {other_id} at {budget} of edges: {cells}")
    if "prejudice_risk" in summary:
        risk = summary["prejudice_risk"]
        print(
            f"  prejudice risk over {risk['occupations']} occupations: "
            f"{risk['mean_first']:.2f} -> {risk['mean_last']:.2f}"
        )
    for row in summary.get("diverging_edges", {}).get("edges", [])[:5]:
        print(
            f"  strengthened here, not in {other.id}: {row['edge']} "
            f"(|score| {row['change_here']:+.3f} here, {row['change_there']:+.3f} there)"
        )
    for budget, rows in summary.get("faithfulness_over_time", {}).items():
        cells = ", ".join(
            f"{r['step']}: {_cell(r.get('own'))}/{_cell(r.get('initial'))}" for r in rows
        )
        print(f"  faithfulness at {budget} of edges (own/initial circuit): {cells}")
    return 0


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}"
