"""The README's arithmetic table: SmolLM2-135M-Instruct before and after circuit-tuning, full
fine-tuning, LoRA and circuit-LoRA on the built-in ``arithmetic`` word problems, at equal steps and
learning rate, produced by ``circuitviz compare``.

    python benchmarks/arithmetic_table.py [--steps 300] [--n-eval 128] [--runs-dir runs/arithmetic]
        [--only lora,circuit-lora] [--reuse circuit=RUN_ID ...] [--extra "--batch-size 4"]
        [--model smollm2-135m] [--json]

1. ``circuitviz tune`` once per row, every option at the task's and the model's defaults (AdamW,
   lr 1e-4, batch 8; circuit methods: top 2,000 edges re-discovered every 10 steps, process metric,
   mean ablation; LoRA: rank 32, alpha 64, dropout 0.05 on q/k/v/o/up/gate/down, the paper's
   baseline) except the rows' own flags below and ``--n-dev N_EVAL``: each run scores exact match
   and the response loss on the same ``N_EVAL`` dev problems (disjoint from training) before step 1
   and after its last step, and the held-out real text (the Python documentation's prose).
2. ``circuitviz compare RUN ... --base --markdown`` prints the table (the base row is the runs'
   own step-0 figures); ``table.json`` in the runs directory keeps every figure (``--json``).

Everything goes through the command line, so the table is what a user would get. On two busy CPU
cores each 300-step SmolLM2 run takes about an hour; ``--only`` runs some rows, ``--reuse
LABEL=RUN_ID`` takes a finished run for a row (made with the same --steps, --n-eval and
``--extra`` flags, under --runs-dir), ``--extra`` adds flags to every tune run, and ``--steps 2
--n-eval 4 --model random:tiny.json`` (a Llama-shaped config with a context of 1,024 tokens: the
demo model's 64 tokens cut these problems short) checks the script itself in a minute.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

# (label, tune flags). Circuit-tuning at the defaults and at neuron-group granularity with a small
# circuit, full fine-tuning, LoRA, and circuit-LoRA (LoRA's adapters, each update restricted to
# the circuit re-discovered every K steps).
VARIANTS = (
    ("circuit", ("--method", "circuit")),
    ("circuit-g8-n300", ("--method", "circuit", "--mlp-groups", "8", "--top-n", "300")),
    ("full", ("--method", "full")),
    ("lora", ("--method", "lora")),
    ("circuit-lora", ("--method", "circuit-lora")),
)


def circuitviz(*argv: str, json_out: bool = True):
    done = subprocess.run(
        [sys.executable, "-m", "circuitviz", *argv, *(("--json",) if json_out else ())],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"circuitviz {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout) if json_out else done.stdout


def tune(args, label: str, flags: tuple[str, ...]) -> str:
    print(f"[{label}] tuning {args.steps} steps ...", file=sys.stderr, flush=True)
    result = circuitviz(
        "tune",
        *("--model", args.model, "--task", "arithmetic", *flags),
        *("--steps", str(args.steps), "--n-dev", str(args.n_eval)),
        *("--runs-dir", args.runs_dir, "--no-progress"),
        *shlex.split(args.extra),
    )
    print(f"[{label}] run {result['run_id']}", file=sys.stderr, flush=True)
    return result["run_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n-eval", type=int, default=128, help="dev problems each run scores")
    parser.add_argument("--runs-dir", default="runs/arithmetic")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--only", default=None, help="comma-separated row labels to run")
    parser.add_argument(
        "--reuse", action="append", default=[], metavar="LABEL=RUN_ID", help="a finished run"
    )
    parser.add_argument(
        "--extra", default="", help='flags for every tune run, e.g. "--batch-size 4"'
    )
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    labels = [label for label, _ in VARIANTS]
    reused = dict(item.split("=", 1) for item in args.reuse)
    only = labels if args.only is None else [x.strip() for x in args.only.split(",")]
    for label in [*reused, *only]:
        if label not in labels:
            raise SystemExit(f"unknown row {label!r}; rows: {', '.join(labels)}")
    for label, run_id in reused.items():
        if not (Path(args.runs_dir) / run_id / "run.sqlite").is_file():
            raise SystemExit(f"--reuse {label}={run_id}: no such run under {args.runs_dir}")

    run_ids = []
    for label, flags in VARIANTS:
        if label in reused:
            run_ids.append(reused[label])
        elif label in only:
            run_ids.append(tune(args, label, flags))
    table = ("compare", *run_ids, "--base", "--runs-dir", args.runs_dir)
    rows = circuitviz(*table)
    (Path(args.runs_dir) / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.json:
        print(json.dumps({"steps": args.steps, "n_eval": args.n_eval, "rows": rows}, indent=2))
        return
    print(f"{args.model}, arithmetic, {args.steps} steps, {args.n_eval} dev problems:")
    print(circuitviz(*table, "--markdown", json_out=False), end="")


if __name__ == "__main__":
    main()
