"""``circuitviz export-model``: a tuning run's weights as a plain Hugging Face model directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from circuitviz.cli.common import UserError, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-model",
        help="write a run's tuned model as a Hugging Face directory (transformers loads it)",
        description="Write the final weights of a tuning run (or a checkpoint's, with --step) as "
        "a plain Hugging Face model directory: config.json, generation_config.json, "
        "model.safetensors, the tokenizer files (chat template included) and circuitviz.json "
        "(which run and step the weights come from). "
        "transformers.AutoModelForCausalLM.from_pretrained(DIR) loads it without circuitviz. "
        "GPT-2 and Llama-family models.",
    )
    parser.add_argument("run", metavar="RUN", help="run id (circuitviz runs list) or run directory")
    parser.add_argument("--step", type=int, default=None, help="a checkpoint step (default: final)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    parser.add_argument(
        "--runs-dir", default=None, metavar="DIR", help="where runs live (default ./runs)"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a directory that already has a model"
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuitviz.models import ModelLoadError, load_model, save_model

    if args.step is not None and args.step < 0:
        raise UserError(f"--step must be >= 0, got {args.step}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if (out / "config.json").exists() and not args.force:
        raise UserError(f"{out} already holds a model (config.json); pass --force to overwrite it")
    spec = f"run:{args.run}" + ("" if args.step is None else f"@{args.step}")
    try:
        model = load_model(spec, device="cpu", runs_dir=args.runs_dir)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc
    provenance = {"model": spec, **(model.origin or {}), "dtype": str(model.dtype)}
    save_model(model, out, provenance=provenance)
    written = sorted(path.name for path in out.iterdir())
    if args.json:
        print_json({"out": str(out), "files": written, **provenance})
    else:
        print(f"wrote {spec} (base {provenance['base_model']}, step {provenance['step']}) to {out}")
        print(f"  {', '.join(written)}", file=sys.stdout)
    return 0
