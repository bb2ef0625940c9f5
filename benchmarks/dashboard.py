"""How long the dashboard takes to redraw the circuit when a slider moves, server side.

A GPT-2-small-sized run (12 layers x 12 heads: 32,491 edges) is written with the synthetic run
writer; then each "slider move" does exactly the page's per-move work on cached data: pick the
step's scores, select the top-N edges (2,000 shown), build the plotly figure, and serialise it the
way ``st.plotly_chart`` does (figure check, JSON, and the hash that names the element).

    python benchmarks/dashboard.py            # a table
    python benchmarks/dashboard.py --json     # {"redraw_ms": ..., ...}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time

import plotly.io as pio
import plotly.tools

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.circuit import circuit_figure
from circuitviz.plotting.layout import build_layout
from circuitviz.plotting.rundata import load_run_frames, resolve_view
from circuitviz.plotting.view import ViewState
from circuitviz.runs import RunStore
from circuitviz.runs.synthetic import write_synthetic_run


def redraw(frames, layout, view: ViewState) -> int:
    """One slider move; returns the size of the JSON sent to the browser."""
    resolved = resolve_view(frames, view)
    fig = circuit_figure(
        layout,
        resolved.scores,
        resolved.selected,
        threshold=view.threshold,
        top_n=view.top_n,
        highlight=view.node,
        compare=resolved.compare,
        title=resolved.title,
    )
    checked = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    spec = pio.to_json(checked, validate=False)
    hashlib.md5(spec.encode(), usedforsecurity=False).hexdigest()
    return len(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--top-n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--compare", action="store_true", help="time compare (diff) mode too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    graph = build_graph(args.layers, args.heads)
    with tempfile.TemporaryDirectory() as root:
        run_id = write_synthetic_run(root, n_steps=200, graph=graph, snapshot_every=20, seed=0)
        start = time.perf_counter()
        frames = load_run_frames(RunStore([root]).open(run_id))
        load_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    layout = build_layout(graph)
    layout_ms = 1000 * (time.perf_counter() - start)

    tokens = frames.tokens
    base = ViewState(run=run_id, top_n=args.top_n)
    redraw(frames, layout, base.with_(step=tokens[0]))  # warm-up (imports, caches)
    results = {}
    modes = [("redraw_ms", None)] + ([("compare_redraw_ms", tokens[0])] if args.compare else [])
    for name, compare in modes:
        times, size = [], 0
        for i in range(args.repeats):
            view = base.with_(step=tokens[i % len(tokens)], compare=compare)
            start = time.perf_counter()
            size = redraw(frames, layout, view)
            times.append(1000 * (time.perf_counter() - start))
        results[name] = round(statistics.median(times), 1)
        results[f"{name}_max"] = round(max(times), 1)
        results[f"{name.removesuffix('_ms')}_spec_bytes"] = size
    report = {
        **results,
        "n_edges": layout.n_edges,
        "shown": args.top_n,
        "repeats": args.repeats,
        "layout_ms": round(layout_ms, 1),
        "load_run_ms": round(load_ms, 1),
        "n_snapshots": len(tokens),
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in report.items():
            print(f"{key:>24}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
