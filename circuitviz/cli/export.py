"""``circuitviz export``: what the dashboard's Export page makes, from the command line.

circuitviz export --run RUN --step after --top-n 100 --out circuit.svg
circuitviz export --view saved.view.json --out circuit.pdf
circuitviz export --run RUN --out slider.gif
circuitviz export --run RUN --out run.player.html   # the dashboard's renderer, offline
circuitviz export --run RUN --node-color dla --out dla.svg   # boxes by direct logit attribution

Nothing here imports torch: a run is drawn from its stored scores and its graph's names.
"""

from __future__ import annotations

from pathlib import Path

from circuitviz.cli.common import UserError, check_writable, print_json, require_app_extra
from circuitviz.plotting.style import NODE_COLORS  # plain constants: no plotting stack

# The export formats (``circuitviz.plotting.export.FORMATS``), listed here so that ``--help`` does
# not import the plotting stack; a test keeps the two equal.
FORMATS = ("svg", "pdf", "png", "html", "player", "gif", "json", "csv", "graphml", "gexf", "view")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="save a run's circuit view as SVG/PDF/PNG, HTML, GIF, JSON, CSV, GraphML or GEXF",
        description="Export one view of a run: the figure (SVG, PDF, PNG; drawn without a "
        "browser), an interactive HTML page, a GIF of every snapshot, the circuit as JSON "
        "(EAP-IG's format), CSV, a GraphML or GEXF network (Gephi, Cytoscape, networkx), or the view state (.view.json, which the dashboard reopens). "
        "Start from a saved view (--view) or a run (--run); other options override the view.",
    )
    parser.add_argument("--run", help="a run id (see `circuitviz runs list`) or run directory")
    parser.add_argument("--view", metavar="FILE", help="a .view.json saved by the dashboard")
    parser.add_argument("--step", help="before, after or a step number (default: the newest)")
    parser.add_argument("--compare", metavar="STEP", help="colour changes from STEP to --step")
    parser.add_argument(
        "--task",
        help="whose circuit to draw, for a run that stored several tasks' (a tuning run's "
        "'before' circuit is its original task's, e.g. sv-agreement; default: the run's own)",
    )
    parser.add_argument("--threshold", type=float, help="show edges with |score| >= T")
    parser.add_argument("--top-n", help="show the N strongest edges, or 'all' (default 100)")
    parser.add_argument("--node", help="highlight one box (a3.h1, m2, input, logits)")
    parser.add_argument("--color-by", choices=["sign", "target"], help="colour edges by")
    parser.add_argument(
        "--node-color",
        choices=NODE_COLORS,
        help="fill boxes by their kind (default), their direct logit attribution or a role's "
        "score, as `circuitviz analyse` measured them at the latest step at or before --step",
    )
    parser.add_argument(
        "--only-circuit", action="store_true", help="only edges of the run's own circuit"
    )
    parser.add_argument(
        "--focus", action="store_true", help="with --node: only the paths through that box"
    )
    parser.add_argument(
        "--collapse", action="store_true", help="shrink layers that no shown edge touches"
    )
    parser.add_argument("--presentation", action="store_true", help="large text, thick lines")
    parser.add_argument(
        "--format", choices=FORMATS, help="default: from the file name (x.view.json = view)"
    )
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument(
        "--runs-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="where runs live (repeatable); default $CIRCUITVIZ_RUNS or ./runs, plus the demo runs",
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=export_command)


def build_view(args):
    """The view the options ask for: a saved view (if any) with the options applied on top."""
    from circuitviz.plotting.view import ViewState, load_view

    try:
        view = load_view(args.view) if args.view else ViewState()
    except OSError as exc:
        raise UserError(f"cannot read --view {args.view}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UserError(f"--view {args.view}: {exc}") from exc
    changes: dict = {}
    for name in ("run", "step", "compare", "threshold", "node", "color_by", "node_color", "task"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.run is not None and args.run != view.run and args.task is None:
        changes["task"] = None  # a saved view's task was its own run's; another run has its own
    if args.top_n is not None:
        if args.top_n != "all" and not args.top_n.isdigit():
            raise UserError(f"--top-n must be a whole number or 'all', got {args.top_n!r}")
        changes["top_n"] = None if args.top_n == "all" else int(args.top_n)
    for flag in ("only_circuit", "focus", "collapse"):
        if getattr(args, flag):
            changes[flag] = True
    if args.presentation:
        changes["presentation"] = True
    try:
        view = view.with_(**changes)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if view.run is None:
        raise UserError("say which run to export: --run RUN (see `circuitviz runs list`) or --view")
    if args.focus and view.node is None:
        raise UserError("--focus draws one box's neighbourhood: say which with --node (e.g. a1.h0)")
    return view


def check_node_color(frames, mode: str) -> None:
    """UserError when the run has not stored the analysis ``mode`` colours boxes by."""
    from circuitviz.plotting.rundata import node_color_modes

    modes = node_color_modes(frames)
    if mode not in modes:
        raise UserError(
            f"run {frames.run_id} has no {mode} analysis to colour boxes by: run "
            f"`circuitviz analyse {frames.run_id}` first (it offers: {', '.join(modes)})"
        )


def _format(asked: str | None, out: str) -> str:
    """The format to write: ``--format``, else the one ``out``'s name asks for. A name that asks
    for another format (``--format graphml --out x.gexf``, ``--format json --out x.view.json``) is
    refused: the file would lie. HTML pages (html, player) share a suffix."""
    from circuitviz.plotting.export import SUFFIX, format_for_path

    try:
        named = format_for_path(out)
    except ValueError as exc:
        if asked is None:
            raise UserError(str(exc)) from exc
        return asked  # a name that asks for no format: --format decides
    if asked is None or asked == named or {asked, named} <= {"html", "player"}:
        return asked or named
    raise UserError(
        f"--out {out} names a {named} file but --format is {asked}: name it x.{SUFFIX[asked]}, or "
        f"drop --format to write {named}"
    )


def _other_task_hint(run, view, snapshots) -> str:
    """Where a step missing from the drawn task's circuits is stored for another task (a tuning
    run's "before" circuit is its original task's): the --task that finds it, or nothing."""
    from circuitviz.plotting.rundata import drawn_task, stored_tasks
    from circuitviz.plotting.view import step_tokens

    if view.step is None or view.task is not None:
        return ""
    drawn = drawn_task(run.task, snapshots)
    for task in stored_tasks(snapshots):
        if task != drawn and view.step in step_tokens(snapshots[snapshots["task"] == task]):
            return f"; its {view.step!r} circuit is of task {task}: add --task {task}"
    return ""


def export_command(args) -> int:
    require_app_extra("circuitviz export")
    from circuitviz.plotting.export import export_view, save_export
    from circuitviz.plotting.layout import layout_for
    from circuitviz.plotting.rundata import load_run_frames, stored_tasks
    from circuitviz.runs import RunCorrupt, RunNotFound, RunStore, RunStoreError
    from circuitviz.runs.store import DEMO_RUNS, default_roots

    view = build_view(args)
    fmt = _format(args.format, args.out)
    check_writable(Path(args.out), flag="--out")
    roots = [*args.runs_dir, DEMO_RUNS] if args.runs_dir else default_roots()
    try:
        run = RunStore(roots).open(view.run)
        snapshots = run.snapshots()
        tasks = stored_tasks(snapshots)
        if view.task is not None and view.task not in tasks:
            raise UserError(
                f"run {run.id} stored no circuit of task {view.task!r}; it has: "
                + (", ".join(tasks) or "none yet")
            )
        frames = load_run_frames(run, task=view.task)
        n_layers, n_heads, n_kv_heads, paper, groups = frames.layout_key
        layout = layout_for(n_layers, n_heads, n_kv_heads, paper=paper, mlp_groups=groups)
        if list(layout.edge_names) != run.edge_names():
            raise RunCorrupt(
                f"its recorded edge names do not match the graph of shape {frames.graph_shape}"
            )
        check_node_color(frames, view.node_color)
    except RunNotFound as exc:
        raise UserError(str(exc)) from exc
    except (RunCorrupt, RunStoreError) as exc:
        raise UserError(f"run {view.run} cannot be read: {exc}") from exc
    try:
        data = export_view(frames, layout, view, fmt)
    except KeyError as exc:
        raise UserError(str(exc.args[0]) + _other_task_hint(run, view, snapshots)) from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    out = Path(args.out)
    save_export(data, out)
    if args.json:
        print_json({"path": str(out), "format": fmt, "bytes": len(data), "view": view.to_query()})
    else:
        print(f"wrote {out} ({fmt}, {len(data):,} bytes)")
    return 0
