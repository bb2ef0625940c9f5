"""``circuitviz pretrain-demo``: rebuild the bundled demo model from scratch."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from circuitviz.cli.common import UserError, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain-demo",
        help="retrain the bundled demo model from the synthetic corpus",
        description="Generate the synthetic English corpus and train the small GPT-2 demo model on "
        "it (CPU, a few minutes). The same seed gives the same model.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (HF format)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: full)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from circuitviz.demo.pretrain import pretrain_demo

    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    existing = next(parent for parent in out.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, so no directory can be made under it")
    if not os.access(existing, os.W_OK):
        raise UserError(f"--out {out}: {existing} is not writable")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").exists():
        raise UserError(f"--out {out} is a non-empty directory that is not a model; pick another")
    print(f"training the demo model into {out}")
    bar = tqdm(total=None, unit="step", dynamic_ncols=True)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        result = pretrain_demo(out, seed=args.seed, steps=args.steps, progress=progress)
    finally:
        bar.close()
    payload = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in asdict(result).items()
    }
    if args.json:
        print_json(payload)
    else:
        for key, value in payload.items():
            print(f"  {key:<20} {value}")
    return 0
