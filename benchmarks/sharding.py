"""Per-process memory of a tuning step split across processes: FSDP (``--shard fsdp``) and plain
data parallel (``--nproc``) over one process, at a real width.

    python benchmarks/sharding.py --json [--shape llama-1b:6] [--methods full,circuit]
        [--batch 2] [--seq 128] [--nproc 2] [--modes one,fsdp,dp]

The model is ``memory.py``'s shape (Llama-3.2-1B's width with D of its 16 layers, random
weights); the step is ``memory.py``'s (AdamW, an instruction batch of ``batch`` texts of ``seq``
tokens, circuit-tuning with K = 1). Up to three set-ups (``--modes``), each in fresh processes:

* ``one``: one process, the whole global batch;
* ``dp``: ``nproc`` processes (gloo), each with the whole model, half the batch each (it needs
  ``nproc`` times one process's memory on one machine; at 2 layers it measured 0.99 of ``one``
  per process, which is why it is not in the default modes);
* ``fsdp``: the same with the model split by ``shard_model``.

Each process loads the model (and shards it), builds the tuner, then runs two optimizer steps
(the first creates AdamW's state); the figure is its peak resident set over those two steps
(``VmHWM`` after ``/proc/self/clear_refs``), in absolute terms: what must fit on one device. The
largest over the processes is reported. ``fsdp_over_one`` is the figure a user would scale by
to know how much larger a model fits. The tied embedding (a quarter of the 1B model's parameters)
is gathered whole in every forward and backward: the fewer the layers, the less the split saves.
On the CPU, gloo; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(mode: str, config_path: str, method: str, batch: int, seq: int, out: str) -> None:
    """One process of a set-up; rank 0 writes the largest peak (MB) over the ranks to ``out``."""
    import torch

    sys.path.insert(0, str(HERE))
    from memory import _rss_kb, _tuning_step

    from circuitviz.models import load_model

    torch.set_num_threads(1)
    distributed = mode != "one"
    if distributed:
        import torch.distributed as dist

        from circuitviz.tuning import distributed as parallel

        dist.init_process_group("gloo")
    model = load_model(f"random:{config_path}", device="cpu", dtype="float32")
    if mode == "fsdp":
        parallel.shard_model(model)
    tuner_class = None
    if distributed:
        from circuitviz.tuning.loop import Tuner

        tuner_class = parallel.data_parallel(Tuner, sharded=mode == "fsdp")
    step = _tuning_step(model, method, batch, seq, tuner_class=tuner_class, steps=2)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    step()
    peak = _rss_kb("VmHWM") / 1024
    if distributed:
        peaks = [None] * dist.get_world_size()
        dist.all_gather_object(peaks, peak)
        peak = max(peaks)
        dist.destroy_process_group()
        if int(os.environ["RANK"]) != 0:
            return
    Path(out).write_text(json.dumps(peak))


def measure(mode: str, config_path: str, method: str, args) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        me = [str(Path(__file__).resolve()), "--worker", mode, config_path, method]
        me += [str(args.batch), str(args.seq), out.name]
        if mode == "one":
            command = [sys.executable, *me]
        else:
            launcher = ["-m", "torch.distributed.run", "--standalone"]
            command = [sys.executable, *launcher, f"--nproc-per-node={args.nproc}", *me]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{mode} {method} failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llama-1b:6")
    parser.add_argument("--methods", default="full,circuit")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--modes", default="one,fsdp", help="of one, dp, fsdp")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, path, method, batch, seq, out = args.worker
        worker(mode, path, method, int(batch), int(seq), out)
        return
    sys.path.insert(0, str(HERE))
    from memory import SHAPES, config_file

    shape, _, depth = args.shape.partition(":")
    depth = int(depth or SHAPES[shape]["full_layers"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(config_file(shape, depth, Path(tmp)))
        for method in args.methods.split(","):
            modes = args.modes.split(",")
            peaks = {mode: measure(mode, path, method, args) for mode in modes}
            row = {"method": method, **{f"{m}_peak_mb": round(mb, 1) for m, mb in peaks.items()}}
            for mode in ("dp", "fsdp"):
                if mode in peaks and "one" in peaks:
                    row[f"{mode}_over_one"] = round(peaks[mode] / peaks["one"], 2)
            rows.append(row)
    report = {
        "benchmark": "sharding",
        "shape": shape,
        "layers": depth,
        "of_layers": SHAPES[shape]["full_layers"],
        "processes": args.nproc,
        "batch": args.batch,
        "seq": args.seq,
        "memory": "peak resident set per process over two optimizer steps, largest over ranks",
        "results": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{shape} with {depth} layers, batch {args.batch} x {args.seq}, {args.nproc} processes")
    for row in rows:
        print("  " + "  ".join(f"{key} {value}" for key, value in row.items()))


if __name__ == "__main__":
    main()
