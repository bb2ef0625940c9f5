"""Peak memory of edge attribution over the plain training step it rides on, at real widths.

    python benchmarks/memory.py --json [--shapes llama-1b:2,llama-1b:4,gpt2:12] [--batch 2]
        [--seq 512]

Shapes: ``llama-1b:D`` is Llama-3.2-1B's width (d_model 2,048, 32 heads, 8 key/value groups, MLP
8,192, vocabulary 128,256, tied embeddings) with D layers of its 16, random weights;
``gpt2:D`` is GPT-2 small's (768, 12 heads, MLP 3,072, vocabulary 50,257) with D of its 12. Two
depths of one width show what grows with depth apart from the fixed embedding and logits.

Each figure is measured in a fresh process (so one measurement's allocations cannot hide
another's): the model is loaded, then the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) above its resident size before the call is read:

* ``fwd_bwd``: the Hugging Face model as a user trains it: attribution hooks off, every parameter
  requiring grad, next-token loss, ``backward`` (gradients of every parameter allocated);
* ``eap``: ``batch_edge_scores`` with EAP (corrupted baseline, every position, logit difference),
  on the same batch; parameters frozen (activation gradients only);
* ``eap_target``: the same scored at each example's last position only (``positions="target"``,
  what circuit-tuning's pair tasks use), which keeps one position's activation differences;
* ``fwd_bwd_checkpointed``: ``fwd_bwd`` with every block checkpointed (``tune
  --grad-checkpointing``): only each block's input is kept, the backward recomputes the rest.

and one tuning step (``Tuner.step``, AdamW, its optimizer state included) on an instruction batch of
``batch`` texts of ``seq`` tokens (demo-vocabulary words, response-only loss, the process metric
with mean ablation at every position, as instruction tasks discover):

* ``tune_full``: a full fine-tuning step;
* ``tune_circuit``: a circuit-tuning step with K = 1 (discovery on the batch, top 2,000 edges, or
  half the graph's when it has fewer than 4,000).

``eap_peak_over_fwd_bwd_peak`` (goal <= 1.5) and ``tune_peak_over_full_peak`` (goal <= 1.3) are the
ratios. On CUDA the same measurement would read
``torch.cuda.max_memory_allocated``; this script measures the CPU. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {
    "llama-1b": {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "max_position_embeddings": 2048,
        "full_layers": 16,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 768,
        "n_head": 12,
        "n_inner": 3072,
        "vocab_size": 50257,
        "n_positions": 1024,
        "full_layers": 12,
    },
}


def config_file(shape: str, depth: int, directory: Path) -> Path:
    config = dict(SHAPES[shape])
    config.pop("full_layers")
    config["num_hidden_layers" if shape != "gpt2" else "n_layer"] = depth
    path = directory / f"{shape}-{depth}.json"
    path.write_text(json.dumps(config))
    return path


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(
    kind: str, config_path: str, batch: int, seq: int, device: str = "cpu", dtype: str = "float32"
) -> float:
    """One measurement, in this (fresh) process: peak MB above the loaded model (on CUDA, peak
    allocated above what was allocated before the call)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from attribution import fwd_bwd, random_batch

    from circuitviz.attribution import AttributionConfig, batch_edge_scores
    from circuitviz.graph.topology import graph_for
    from circuitviz.models import load_model

    torch.set_num_threads(1)
    model = load_model(f"random:{config_path}", device=device, dtype=dtype)
    data = random_batch(model.info.d_vocab, batch, seq, model.device)
    if kind in ("tune_full", "tune_circuit"):
        run = _tuning_step(model, kind.removeprefix("tune_"), batch, seq)
    elif kind in ("fwd_bwd", "fwd_bwd_checkpointed"):
        from circuitviz.tuning.discovery import hook_flags
        from circuitviz.tuning.loop import checkpointed_blocks

        for param in model.bridge.parameters():
            param.requires_grad_(True)

        def run():
            # Flags and checkpointing span the backward too: it recomputes the blocks.
            with (
                hook_flags(model.bridge, False),
                checkpointed_blocks(model.bridge, kind == "fwd_bwd_checkpointed"),
            ):
                fwd_bwd(model, data)

    else:
        graph = graph_for(model.info)
        positions = "target" if kind == "eap_target" else "all"
        config = AttributionConfig(method="eap", positions=positions)
        run = lambda: batch_edge_scores(model, graph, data, config)  # noqa: E731
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
        before = torch.cuda.memory_allocated(model.device)
        run()
        torch.cuda.synchronize(model.device)
        return (torch.cuda.max_memory_allocated(model.device) - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kb("VmRSS")
    run()
    return (_rss_kb("VmHWM") - before) / 1024


def _tuning_step(model, method: str, batch: int, seq: int, *, tuner_class=None, steps: int = 1):
    """A ``Tuner`` (or ``tuner_class``) on an instruction file of random demo-vocabulary texts;
    returns a function that runs its steps 1..``steps``."""
    import random

    from circuitviz.demo.tokenizer import demo_vocabulary
    from circuitviz.graph.topology import graph_for
    from circuitviz.tuning.config import TuneConfig
    from circuitviz.tuning.loop import Tuner, trainable_only
    from circuitviz.tuning.storage import create_run

    words = sorted(w for w in demo_vocabulary() if w.isalpha())
    rng = random.Random(0)
    directory = Path(tempfile.mkdtemp())
    rows = [
        {
            "prompt": " ".join(rng.choices(words, k=seq // 4)),
            "response": " ".join(rng.choices(words, k=seq - seq // 4 - 8)),
        }
        for _ in range(64)
    ]
    data = directory / "texts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = f"sft:{data}"
    layers = TuneConfig.defaults_for(task, "random:x")
    config = TuneConfig.from_dict(
        {
            **{k: v for layer in layers for k, v in layer.items()},
            "method": method,
            "optimizer": "adamw",
            "lr": 1e-4,
            "steps": steps,
            "batch_size": batch,
            "top_n": min(2000, graph_for(model.info).n_edges // 2),
            "n_train": 4 * batch,
            "n_dev": 2,
            "n_probe": 2,
            "n_heldout": 2,
            "max_length": seq,
            "chat_template": False,
        }
    )
    writer = create_run(model, task, config, directory / "runs")
    tuner = (tuner_class or Tuner)(model, task, config, writer, None)

    def step():
        with trainable_only(model, tuner.train_params.values()):
            for number in range(1, steps + 1):
                tuner.step(number)

    return step


def child(kind: str, config_path: str, batch: int, seq: int, device="cpu", dtype="float32"):
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, config_path, str(batch), str(seq)]
        + [device, dtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {kind} on {config_path} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="llama-1b:2,llama-1b:4,gpt2:12")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, ...")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, batch, seq, device, dtype = args.child
        print(measure(kind, path, int(batch), int(seq), device, dtype))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.shapes.split(","):
            shape, _, depth = item.partition(":")
            depth = int(depth or SHAPES[shape]["full_layers"])
            path = str(config_file(shape, depth, Path(tmp)))
            plain = child("fwd_bwd", path, args.batch, args.seq, args.device, args.dtype)
            eap = child("eap", path, args.batch, args.seq, args.device, args.dtype)
            target = child("eap_target", path, args.batch, args.seq, args.device, args.dtype)
            checkpointed = child(
                "fwd_bwd_checkpointed", path, args.batch, args.seq, args.device, args.dtype
            )
            tune_full = child("tune_full", path, args.batch, args.seq, args.device, args.dtype)
            tune_circuit = child(
                "tune_circuit", path, args.batch, args.seq, args.device, args.dtype
            )
            results.append(
                {
                    "shape": shape,
                    "layers": depth,
                    "of_layers": SHAPES[shape]["full_layers"],
                    "fwd_bwd_peak_mb": round(plain, 1),
                    "eap_peak_mb": round(eap, 1),
                    "eap_peak_over_fwd_bwd_peak": round(eap / plain, 2),
                    "eap_target_peak_mb": round(target, 1),
                    "eap_target_peak_over_fwd_bwd_peak": round(target / plain, 2),
                    "fwd_bwd_checkpointed_peak_mb": round(checkpointed, 1),
                    "tune_full_peak_mb": round(tune_full, 1),
                    "tune_circuit_peak_mb": round(tune_circuit, 1),
                    "tune_peak_over_full_peak": round(tune_circuit / tune_full, 2),
                }
            )
    report = {
        "benchmark": "memory",
        "device": args.device,
        "dtype": args.dtype,
        "batch": args.batch,
        "seq": args.seq,
        "memory": "CUDA max_memory_allocated above the start"
        if args.device.startswith("cuda")
        else "peak RSS (VmHWM) above the RSS before the call, fresh process each",
        "goals": {"eap_peak_over_fwd_bwd_peak": 1.5, "tune_peak_over_full_peak": 1.3},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for row in results:
        print(row)


if __name__ == "__main__":
    main()
