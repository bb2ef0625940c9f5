"""The README's arithmetic table: SmolLM2-135M-Instruct before and after circuit-tuning and full
fine-tuning on the built-in ``arithmetic`` word problems, at the same steps and learning rate.

    python benchmarks/arithmetic_table.py [--steps 300] [--runs-dir runs/arithmetic] [--json]

1. Score the base model on the test split (exact match of greedy answers, response loss) and on
   the held-out real text (the Python documentation's prose, which no task uses).
2. ``circuitviz tune --method circuit`` (at the defaults, and with 8 neuron groups per MLP and
   300 edges) and ``--method full``, every other option at the task's and the model's defaults
   (AdamW, lr 1e-4, batch 8; circuit: top 2,000 edges re-discovered every 10 steps, process
   metric, mean ablation).
3. Score each run's final weights (``run:RUN``) on the same test problems and held-out text.

Everything goes through the command line, so the table is what a user would get. On two busy CPU
cores the whole script takes about an hour and a half at its defaults (100 steps of batch 4, 64
test problems); ``--steps``, ``--batch-size`` and ``--n-test`` change the budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def circuitviz(*argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "circuitviz", *argv, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"circuitviz {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def score(model: str, runs_dir: str, n_test: int) -> dict:
    result = circuitviz(
        "evaluate",
        *("--model", model, "--task", "arithmetic", "--split", "test", "-n", str(n_test)),
        *("--runs-dir", runs_dir, "--heldout", "64"),
    )
    return {
        "exact_match": result["exact_match"],
        "response_loss": result["response_loss"],
        "heldout_loss": result["heldout_loss"],
        "heldout_text": result["heldout_text"],
    }


# (label, tune flags): circuit-tuning at the defaults, circuit-tuning at neuron-group granularity
# with a smaller circuit (a third of the parameters instead of most), and full fine-tuning.
VARIANTS = (
    ("circuit", ("--method", "circuit")),
    ("circuit, G=8, N=300", ("--method", "circuit", "--mlp-groups", "8", "--top-n", "300")),
    ("full", ("--method", "full")),
)


def tune(flags: tuple[str, ...], steps: int, batch_size: int, runs_dir: str) -> dict:
    started = time.perf_counter()
    result = circuitviz(
        "tune",
        *("--model", "smollm2-135m", "--task", "arithmetic", *flags),
        *("--steps", str(steps), "--batch-size", str(batch_size), "--n-dev", "32"),
        *("--runs-dir", runs_dir, "--no-progress"),
    )
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # A two-core CPU budget (about an hour and a half): 100 steps of batch 4. The tune defaults for
    # a pretrained model are 300 steps of batch 8, a GPU's budget.
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=64, help="test problems scored")
    parser.add_argument("--runs-dir", default="runs/arithmetic")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)

    rows = [{"method": "base", **score("smollm2-135m", args.runs_dir, args.n_test)}]
    for method, flags in VARIANTS:
        run = tune(flags, args.steps, args.batch_size, args.runs_dir)
        summary = run["summary"]
        scored = score(f"run:{run['run_id']}", args.runs_dir, args.n_test)
        rows.append(
            {
                "method": method,
                **scored,
                "run_id": run["run_id"],
                "tuned_param_ratio": summary["tuned_param_ratio"],
                "seconds_per_step": summary["seconds"] / summary["n_steps"],
            }
        )
    base = rows[0]["heldout_loss"]
    for row in rows:
        row["heldout_change"] = row["heldout_loss"] / base - 1.0
    if args.json:
        meta = {"steps": args.steps, "batch_size": args.batch_size, "n_test": args.n_test}
        print(json.dumps({**meta, "rows": rows}, indent=2))
        return
    print(f"| SmolLM2-135M, arithmetic, {args.steps} steps | test exact match | response loss |")
    print("| held-out text loss | change | tuned-parameter ratio | s / step |")
    for row in rows:
        ratio = row.get("tuned_param_ratio")
        per_step = row.get("seconds_per_step")
        print(
            f"| {row['method']} | {row['exact_match']:.3f} | {row['response_loss']:.3f} | "
            f"{row['heldout_loss']:.3f} | {100 * row['heldout_change']:+.1f}% | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | "
            f"{'' if per_step is None else f'{per_step:.1f}'} |"
        )


if __name__ == "__main__":
    main()
