"""Speed and memory of edge attribution against one plain forward + backward, side by side.

    python benchmarks/attribution.py --json
    python benchmarks/attribution.py --models random:gpt2 --repeats 7 --device cpu

For each model, on one batch of random token ids (default 16 x 32; the corrupted prompt differs in
one position), the three measurements are interleaved in every repeat, after one warm-up round,
and the medians reported. On the CPU the time is this process's CPU time (all its threads: the
work done, which stays meaningful on a machine shared with other jobs); on CUDA, wall time.

* ``fwd_bwd``: the bridge with its attribution hook flags off (as a training step runs it),
  next-token loss, ``backward`` into the parameters: one ordinary training step without the
  optimizer;
* ``eap``: ``batch_edge_scores`` with EAP (corrupted baseline, every position, logit difference);
* ``eap_ig5``: the same with EAP-IG over inputs, 5 steps.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
On CPU (Linux), the process's peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs``) above the resident size before the call, after ``malloc_trim`` has
returned freed heap to the system: it counts every allocation, torch's included.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuitviz.attribution import AttributionConfig, batch_edge_scores  # noqa: E402
from circuitviz.graph.topology import graph_for  # noqa: E402
from circuitviz.models import load_model  # noqa: E402
from circuitviz.tuning.discovery import hook_flags  # noqa: E402


@dataclass(frozen=True)
class Batch:
    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_pos: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor


def random_batch(d_vocab: int, n_batch: int, n_pos: int, device) -> Batch:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, d_vocab, (n_batch, n_pos), generator=gen)
    corrupt = clean.clone()
    corrupt[:, n_pos // 2] = torch.randint(0, d_vocab, (n_batch,), generator=gen)
    return Batch(
        clean_ids=clean.to(device),
        corrupt_ids=corrupt.to(device),
        attention_mask=torch.ones_like(clean).to(device),
        target_pos=torch.full((n_batch,), n_pos - 1).to(device),
        answer_ids=torch.randint(0, d_vocab, (n_batch,), generator=gen).to(device),
        wrong_ids=torch.randint(0, d_vocab, (n_batch,), generator=gen).to(device),
    )


def fwd_bwd(model, batch: Batch) -> None:
    with hook_flags(model.bridge, False):
        logits = model.bridge(batch.clean_ids, attention_mask=batch.attention_mask)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch.clean_ids[:, 1:].flatten()
    )
    loss.backward()
    model.bridge.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(fn, device: torch.device) -> float:
    """Peak memory of one call above the memory in use before it."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS is what is in use
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    fn()
    return (_rss_kb("VmHWM") - before) / 1024


def bench_model(spec: str, args) -> dict:
    model = load_model(spec, device=args.device, dtype=args.dtype)
    graph = graph_for(model.info)
    batch = random_batch(model.info.d_vocab, args.batch, args.n_pos, model.device)
    eap = AttributionConfig(method="eap")
    ig5 = AttributionConfig(method="eap-ig-inputs", ig_steps=5)
    runs = {
        "fwd_bwd": lambda: fwd_bwd(model, batch),
        "eap": lambda: batch_edge_scores(model, graph, batch, eap),
        "eap_ig5": lambda: batch_edge_scores(model, graph, batch, ig5),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):  # round 0 warms up
        for name, fn in runs.items():
            clock = time.perf_counter if model.device.type == "cuda" else time.process_time
            _sync(model.device)
            start = clock()
            fn()
            _sync(model.device)
            if repeat:
                times[name].append(clock() - start)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    memory = {name: round(peak_memory_mb(fn, model.device), 1) for name, fn in runs.items()}
    return {
        "model": spec,
        "n_layers": model.info.n_layers,
        "d_model": model.info.d_model,
        "n_edges": graph.n_edges,
        "fwd_bwd_ms": round(ms["fwd_bwd"], 1),
        "eap_ms": round(ms["eap"], 1),
        "eap_ig5_ms": round(ms["eap_ig5"], 1),
        "eap_over_fwd_bwd": round(ms["eap"] / ms["fwd_bwd"], 2),
        "eap_ig5_over_fwd_bwd": round(ms["eap_ig5"] / ms["fwd_bwd"], 2),
        "peak_memory_mb": memory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,random:gpt2", help="comma-separated specs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-pos", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, ...")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    # One thread by default, as in tuning.py: on a small shared machine a multi-threaded torch
    # spins on descheduled OpenMP threads, which swamps CPU-time ratios.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        try:
            results.append(bench_model(spec, args))
        except ValueError as exc:  # e.g. the demo model is not built yet
            results.append({"model": spec, "error": str(exc)})
    device = load_device_name(args.device)
    report = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "n_pos": args.n_pos,
        "repeats": args.repeats,
        "memory": "CUDA max_memory_allocated above the start"
        if "cuda" in device
        else "peak RSS (VmHWM) above the RSS at the start, after malloc_trim",
        "goals": {"eap_over_fwd_bwd": 1.6, "eap_ig5_over_fwd_bwd": 6.0},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in results:
            print(json.dumps(row))
    return 0


def load_device_name(device: str | None) -> str:
    from circuitviz.models import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return f"{resolved} ({torch.cuda.get_device_name(resolved)})"
    return "cpu"


if __name__ == "__main__":
    sys.exit(main())
