"""How much a circuit-tuning step costs next to a plain fine-tuning step, and what a run writes.

    python benchmarks/tuning.py --json [--models demo,random:gpt2] [--repeats 9]

For each model, on sv-disagreement batches of 16:

1. ``circuit_step_over_full_step``: one circuit-tuning step with K = 1 (attribution on the batch,
   top-N selection, masked update, the per-step record) over one full fine-tuning step (forward,
   backward, update, record) on the same batches, in CPU time of this process (all its threads):
   the work done, which stays meaningful on a machine shared with other jobs. ``..._wall`` is the
   same in wall-clock time. The two alternate step by step so that load from other processes hits
   both alike; means over ``repeats`` steps after two warm-up steps. Goal: <= 1.6. Also K = 4.
   ``sft_...``: the same on the instruction task ``arithmetic`` with an instruction task's
   attribution defaults (process metric, mean baseline, every response position), where one
   backward serves the attribution and the update (``tuning.discovery.shared_backward``).
2. ``snapshot_write_ms``: writing one circuit snapshot (every edge's score) to the run store, and
   ``snapshot_compute_ms``: scoring the probe batch for it.
3. ``run_bytes_per_1000_steps``: the database of a run after 1,000 steps recorded with the default
   eval/snapshot periods (synthetic values, real writer), and ``checkpoint_bytes`` of one checkpoint.

Timings are wall-clock on whatever machine runs this; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from circuitviz.models import load_model
from circuitviz.tasks.catalog import KIND_TUNE_DEFAULTS, task_kind
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.loop import Tuner, trainable_only
from circuitviz.tuning.records import snapshot_scores
from circuitviz.tuning.storage import create_run

TASK = "sv-disagreement"
SFT_TASK = "arithmetic"


def _tuner(model, method: str, root: Path, top_n: int, every: int = 1, task: str = TASK) -> Tuner:
    kind = KIND_TUNE_DEFAULTS[task_kind(task)]
    config = TuneConfig(
        attribution=replace(TuneConfig().attribution, **kind.get("attribution", {})),
        method=method,
        top_n=top_n,
        every=every,
        steps=10_000,
        batch_size=16,
        n_train=512,
        n_dev=32,
        n_probe=16,
        n_heldout=8,
        lr=1e-4,
    )
    writer = create_run(model, task, config, root)
    return Tuner(model, task, config, writer, None)


def _timed_step(tuner: Tuner, step: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one optimizer step; on CUDA both are the synchronised wall
    time (this process's CPU time says nothing of the GPU's work)."""
    cuda = tuner.model.device.type == "cuda"
    with trainable_only(tuner.model, tuner.train_params.values()):
        if cuda:
            torch.cuda.synchronize(tuner.model.device)
        cpu, wall = time.process_time(), time.perf_counter()
        tuner.step(step)
        if cuda:
            torch.cuda.synchronize(tuner.model.device)
            elapsed = time.perf_counter() - wall
            return elapsed, elapsed
        return time.process_time() - cpu, time.perf_counter() - wall


def step_ratio(model, root: Path, repeats: int, top_n: int, task: str = TASK) -> dict:
    tuners = {
        "full": _tuner(model, "full", root, top_n, task=task),
        "circuit": _tuner(model, "circuit", root, top_n, task=task),
        "circuit_k4": _tuner(model, "circuit", root, top_n, every=4, task=task),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in tuners}
    for step in range(1, repeats + 3):
        for name, tuner in tuners.items():
            measured = _timed_step(tuner, step)
            if step > 2:  # warm-up
                times[name].append(measured)
    for tuner in tuners.values():
        tuner.writer.close()
    cpu = {name: statistics.mean(t[0] for t in values) for name, values in times.items()}
    wall = {name: statistics.mean(t[1] for t in values) for name, values in times.items()}
    return {
        "circuit_step_over_full_step": cpu["circuit"] / cpu["full"],
        "circuit_step_over_full_step_wall": wall["circuit"] / wall["full"],
        "circuit_k4_step_over_full_step": cpu["circuit_k4"] / cpu["full"],
        "full_step_cpu_ms": 1000 * cpu["full"],
        "circuit_step_cpu_ms": 1000 * cpu["circuit"],
        "full_step_wall_ms": 1000 * wall["full"],
        "circuit_step_wall_ms": 1000 * wall["circuit"],
        "top_n": top_n,
        "batch_size": 16,
        "repeats": repeats,
    }


def snapshot_costs(model, root: Path, repeats: int, top_n: int) -> dict:
    tuner = _tuner(model, "circuit", root, top_n)
    probe = tuner.data.probe
    compute, write = [], []
    for i in range(repeats):
        start = time.perf_counter()
        scores, selected = snapshot_scores(model, tuner.graph, probe, top_n, tuner.config)
        compute.append(time.perf_counter() - start)
        start = time.perf_counter()
        tuner.writer.add_snapshot(i, "during", TASK, scores, selected)
        write.append(time.perf_counter() - start)
    start = time.perf_counter()
    tuner._checkpoint(1)
    checkpoint_s = time.perf_counter() - start
    _, path, _ = tuner.writer.latest_checkpoint()
    checkpoint_bytes = sum(p.stat().st_size for p in path.parent.glob("step-000001.*"))
    tuner.writer.close()
    return {
        "snapshot_compute_ms": 1000 * statistics.median(compute),
        "snapshot_write_ms": 1000 * statistics.median(write),
        "checkpoint_write_ms": 1000 * checkpoint_s,
        "checkpoint_bytes": checkpoint_bytes,
        "n_edges": tuner.graph.n_edges,
    }


def run_size(model, root: Path, top_n: int, n_steps: int = 1000) -> dict:
    """Record ``n_steps`` steps with the default periods (synthetic values) and measure the DB."""
    tuner = _tuner(model, "circuit", root, top_n)
    writer, config, graph = tuner.writer, tuner.config, tuner.graph
    rng = np.random.default_rng(0)
    rows = tuner.meter.rows_now()
    start = time.perf_counter()
    for step in range(1, n_steps + 1):
        writer.log_step(
            step,
            loss=1.0,
            lr=1e-3,
            top_n=top_n,
            n_nodes=50,
            n_edges=top_n,
            tuned_params_whole=10**6,
            tuned_params_exact=10**5,
            tuned_ratio=0.1,
            discovered=True,
        )
        if step % config.eval_every == 0:
            writer.log_eval(step, accuracy=0.5, task_metric=0.1, lm_loss=3.0)
        if step % config.snapshot_every == 0:
            scores = rng.standard_normal(graph.n_edges).astype(np.float32)
            writer.add_snapshot(step, "during", TASK, scores, np.abs(scores) > 1.5)
            writer.add_head_changes(step, rows)
    seconds = time.perf_counter() - start
    writer.close()
    size = sum(p.stat().st_size for p in writer.dir.glob("run.sqlite*"))
    return {
        "run_bytes_per_1000_steps": size * 1000 // n_steps,
        "record_seconds_per_1000_steps": seconds * 1000 / n_steps,
        "eval_every": config.eval_every,
        "snapshot_every": config.snapshot_every,
    }


def bench_model(spec: str, repeats: int, device: str = "cpu", dtype: str = "float32") -> dict:
    model = load_model(spec, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from circuitviz.graph.topology import graph_for

        top_n = min(200, graph_for(model.info).n_edges)
        out = {
            "model": spec,
            "device": str(model.device),
            "dtype": dtype,
            "n_params": model.info.n_params,
            "threads": torch.get_num_threads(),
        }
        out.update(step_ratio(model, root, repeats, top_n))
        sft = step_ratio(model, root, repeats, top_n, task=SFT_TASK)
        out.update({f"sft_{key}": value for key, value in sft.items() if "step" in key})
        out.update(snapshot_costs(model, root, max(3, repeats // 3), top_n))
        out.update(run_size(model, root, top_n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="demo,random:gpt2")
    parser.add_argument("--repeats", type=int, default=8)
    # One thread by default: on a small machine shared with other jobs, a multi-threaded torch waits
    # for descheduled OpenMP threads on every op (a demo-model step went from 27 ms to 1 s at 2
    # threads under load), which swamps the ratio this benchmark is for.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, ...")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    results = [
        bench_model(spec, args.repeats, args.device, args.dtype) for spec in args.models.split(",")
    ]
    if args.json:
        print(json.dumps({"benchmark": "tuning", "results": results}, indent=2))
        return
    for result in results:
        print(result["model"])
        for key, value in result.items():
            if key != "model":
                print(
                    f"  {key:<32} {value:.4g}"
                    if isinstance(value, float)
                    else f"  {key:<32} {value}"
                )


if __name__ == "__main__":
    main()
