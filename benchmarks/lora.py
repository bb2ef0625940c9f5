"""What a LoRA and a circuit-LoRA step cost next to a full fine-tuning step, and how many parameters
each trains.

    python benchmarks/lora.py --json [--models demo,random:gpt2] [--repeats 7] [--rank 32]

For each model, on sv-disagreement batches of 16, the tuning loop's own ``step`` (what
``tune`` runs: for the adapter methods the base weights swapped in, the adapter hooks, backward,
masked update and the merge back into the weights; for circuit-LoRA with K = 1 also attribution
and selection every step):

1. ``lora_step_over_full_step`` and ``circuit_lora_step_over_full_step``: CPU time of this process
   per step over a full fine-tuning step's, the methods alternating step by step so that load from
   other processes hits all alike; means over ``repeats`` steps after two warm-up steps. Also
   ``circuit_step_over_full_step`` (circuit-tuning, K = 1), the same measurement as
   ``benchmarks/tuning.py``, for reference.
2. ``lora_params`` (the adapters' size) and the tuned-parameter ratios of each method's first step.

Timings are whatever this machine gives; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from circuitviz.models import load_model
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.loop import Tuner, trainable_only
from circuitviz.tuning.lora_tuner import LoraTuner
from circuitviz.tuning.storage import create_run

TASK = "sv-disagreement"
METHODS = ("full", "lora", "circuit-lora", "circuit")


def _tuner(model, method: str, root: Path, top_n: int, rank: int) -> Tuner:
    config = TuneConfig(
        method=method,
        top_n=top_n,
        steps=10_000,
        batch_size=16,
        n_train=512,
        n_dev=32,
        n_probe=16,
        n_heldout=8,
        optimizer="adamw",
        lr=1e-4,
        lora_rank=rank,
        lora_alpha=2.0 * rank,
    )
    writer = create_run(model, TASK, config, root)
    cls = LoraTuner if config.adapters else Tuner
    return cls(model, TASK, config, writer, None)


def measure(spec: str, root: Path, repeats: int, top_n: int, rank: int) -> dict:
    tuners = {m: _tuner(load_model(spec, device="cpu"), m, root, top_n, rank) for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    for step in range(1, repeats + 3):
        for method, tuner in tuners.items():
            with trainable_only(tuner.model, tuner.train_params.values()):
                c, w = time.process_time(), time.perf_counter()
                tuner.step(step)
                c, w = time.process_time() - c, time.perf_counter() - w
            if step > 2:
                cpu[method].append(c)
                wall[method].append(w)
    out = {"model": spec, "top_n": top_n, "rank": rank, "repeats": repeats, "batch_size": 16}
    full = statistics.mean(cpu["full"])
    for method in METHODS:
        key = method.replace("-", "_")
        out[f"{key}_step_cpu_ms"] = 1000 * statistics.mean(cpu[method])
        out[f"{key}_step_wall_ms"] = 1000 * statistics.mean(wall[method])
        if method != "full":
            out[f"{key}_step_over_full_step"] = statistics.mean(cpu[method]) / full
        tuner = tuners[method]
        out[f"{key}_tuned_ratio"] = tuner.counts["exact"] / tuner.bank.n_model_params
        tuner.writer.close()
    out["lora_params"] = tuners["lora"].adapters.n_params
    out["circuit_lora_params"] = tuners["circuit-lora"].adapters.n_params
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="demo,random:gpt2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--top-n", type=int, default=200)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            results.append(measure(spec, Path(tmp), args.repeats, args.top_n, args.rank))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for row in results:
        print(
            f"{row['model']}: lora step = {row['lora_step_over_full_step']:.2f}x a full step, "
            f"circuit-lora (K=1) {row['circuit_lora_step_over_full_step']:.2f}x, circuit (K=1) "
            f"{row['circuit_step_over_full_step']:.2f}x; tuned ratios: lora "
            f"{row['lora_tuned_ratio']:.3f}, circuit-lora {row['circuit_lora_tuned_ratio']:.3f}, "
            f"circuit {row['circuit_tuned_ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
