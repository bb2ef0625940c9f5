"""What the dashboard's server does per run and per view, beside reading the run itself:
``python benchmarks/dashboard.py [--json]``.

Scrubbing costs the server nothing (``benchmarks/browser.py`` measures the browser's side). What is
left on the server, for a synthetic run of GPT-2 small's shape (12 x 12, 32,491 edges) and of
SmolLM2-135M's (30 x 9 heads, 3 key/value heads, 70,651 edges), 11 snapshots each:

1. once per run: read it (``load_run_frames``, the baseline), build the layout from names, and pack
   the browser's payload (its size is what goes over the network, once);
2. per exported view: the Python scene at top-2,000, the plotly figure serialised as
   ``st.plotly_chart`` would, and the matplotlib SVG.
Each is the median of ``--repeats`` runs; ratios are against reading the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.io as pio

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.circuit import circuit_figure
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.rundata import load_run_frames, view_scenes
from circuitviz.plotting.static import circuit_static_figure, static_bytes
from circuitviz.plotting.view import ViewState
from circuitviz.plotting.web import payload_parts, run_payload
from circuitviz.runs import RunStore

# The synthetic runs are test support (tests/support), shared with the benchmarks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.synthetic import write_synthetic_run  # noqa: E402

SHAPES = {"gpt2-small": (12, 12, 12), "smollm2-135m": (30, 9, 3)}


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1), result


def measure(shape: str, top_n: int, repeats: int) -> dict:
    n_layers, n_heads, n_kv = SHAPES[shape]
    with tempfile.TemporaryDirectory() as root:
        run_id = write_synthetic_run(
            root, n_steps=200, graph=build_graph(n_layers, n_heads, n_kv), snapshot_every=20
        )
        run = RunStore([root]).open(run_id)
        load_ms, frames = timed(lambda: load_run_frames(run), repeats)
    layout_ms, layout = timed(lambda: layout_for(n_layers, n_heads, n_kv), repeats)
    view = ViewState(run=run_id, top_n=top_n, step="after")
    payload_ms, payload = timed(
        lambda: run_payload(frames, layout, view, base=payload_parts(frames, layout)), repeats
    )
    scene_ms, scenes = timed(lambda: view_scenes(frames, layout, view), repeats)
    ((scene, title),) = scenes
    plotly_ms, _ = timed(lambda: pio.to_json(circuit_figure(scene, title=title)), repeats)
    svg_ms, _ = timed(lambda: static_bytes(circuit_static_figure(scene, title=title), "svg"), 3)
    return {
        f"{shape}_load_run_ms": load_ms,
        f"{shape}_layout_ms": layout_ms,
        f"{shape}_payload_ms": payload_ms,
        f"{shape}_payload_mb": round(len(payload) / 1e6, 2),
        f"{shape}_payload_over_load": round(payload_ms / load_ms, 2),
        f"{shape}_scene_top{top_n}_ms": scene_ms,
        f"{shape}_plotly_top{top_n}_ms": plotly_ms,
        f"{shape}_svg_top{top_n}_ms": svg_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict = {"repeats": args.repeats}
    for shape in SHAPES:
        report.update(measure(shape, args.top_n, args.repeats))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in report.items():
            print(f"{key:>34}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
