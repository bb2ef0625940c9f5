"""Run-store costs: snapshot write time, per-step logging time, bytes on disk, and read time.

    .venv/bin/python benchmarks/store.py [--json] [--repeats 30]

Snapshot writes are timed for GPT-2 small's 32,491 valid edges and for 2,000 edges (one
``add_snapshot`` call: float16 packing, bit-packed mask, one committed transaction). Disk use is
measured by writing a synthetic run of 1,000 steps (evals every 50, snapshots every 50, head changes
with each snapshot) through the public writer and reading the size of the closed run.sqlite.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from circuitviz.graph.topology import build_graph
from circuitviz.runs import Run, RunWriter

# The synthetic runs are test support (tests/support), shared with the benchmarks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.synthetic import write_synthetic_run  # noqa: E402

GPT2_SMALL = (12, 12)  # n_layers, n_heads: 32,491 valid edges


def graph_meta(n_edges: int) -> dict:
    return {
        "n_layers": 1,
        "n_heads": 1,
        "n_kv_heads": 1,
        "paper": False,
        "edge_names": [f"e{i}" for i in range(n_edges)],
        "n_model_params": 1,
    }


def time_calls(call, repeats: int) -> dict:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90))}


def bench_writes(root: Path, n_edges: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(n_edges).astype(np.float32)
    mask = rng.random(n_edges) < 0.1
    writer = RunWriter.create(
        root,
        f"write-{n_edges}",
        config={},
        model_spec="bench",
        task="sv",
        method="circuit",
        seed=0,
        graph_meta=graph_meta(n_edges),
    )

    def snapshot(i: int) -> None:
        writer.add_snapshot(i, "during", "sv", scores, mask)

    def step(i: int) -> None:
        writer.log_step(
            i,
            loss=1.0,
            lr=1e-4,
            top_n=100,
            n_nodes=10,
            n_edges=100,
            tuned_params_whole=10,
            tuned_params_exact=5,
            tuned_ratio=0.1,
            discovered=False,
        )

    result = {
        "n_edges": n_edges,
        "add_snapshot": time_calls(snapshot, repeats),
        "log_step": time_calls(step, repeats),
    }
    writer.close()
    return result


def bench_run_size(root: Path, n_layers: int, n_heads: int) -> dict:
    graph = build_graph(n_layers, n_heads)
    start = time.perf_counter()
    run_id = write_synthetic_run(
        root,
        n_steps=1000,
        graph=graph,
        snapshot_every=50,
        eval_every=50,
        run_id=f"size-{graph.n_edges}",
    )
    write_s = time.perf_counter() - start
    run = Run(root / run_id)
    counts = run.counts()
    size = (run.dir / "run.sqlite").stat().st_size
    conn = sqlite3.connect(run.dir / "run.sqlite")
    by_table = dict(
        conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC"
        ).fetchall()
    )
    conn.close()
    start = time.perf_counter()
    _, matrix = run.score_matrix()
    read_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    Run(run.dir).edge_names()
    open_ms = (time.perf_counter() - start) * 1000
    return {
        "n_edges": graph.n_edges,
        "counts": counts,
        "bytes_per_1000_steps": size,
        "bytes_by_table": by_table,
        "snapshot_payload_bytes": counts["snapshots"]
        * (2 * graph.n_edges + -(-graph.n_edges // 8)),
        "write_whole_run_s": write_s,
        "score_matrix_ms": read_ms,
        "score_matrix_shape": list(matrix.shape),
        "open_and_edge_names_ms": open_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results = {
            "writes": [bench_writes(root, n, args.repeats) for n in (32_491, 2_000)],
            "run_size": [bench_run_size(root, *GPT2_SMALL), bench_run_size(root, 4, 4)],
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for row in results["writes"]:
        print(
            f"{row['n_edges']:>6} edges: add_snapshot {row['add_snapshot']['median_ms']:.2f} ms, "
            f"log_step {row['log_step']['median_ms']:.2f} ms (median)"
        )
    for row in results["run_size"]:
        print(
            f"{row['n_edges']:>6} edges: {row['bytes_per_1000_steps'] / 1e6:.2f} MB per 1,000 steps "
            f"({row['counts']['snapshots']} snapshots), score_matrix {row['score_matrix_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
