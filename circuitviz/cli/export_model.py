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
        "GPT-2 and Llama-family models. A LoRA or circuit-LoRA run exports its adapters merged "
        "into the weights, or with --adapter-only as a peft adapter directory.",
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
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="lora and circuit-lora runs: write the adapters as a peft adapter directory "
        "(adapter_config.json, adapter_model.safetensors) for peft.PeftModel.from_pretrained on "
        "the base model, instead of merged weights",
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
    marker = "adapter_config.json" if args.adapter_only else "config.json"
    if (out / marker).exists() and not args.force:
        raise UserError(f"{out} already holds a model ({marker}); pass --force to overwrite it")
    spec = f"run:{args.run}" + ("" if args.step is None else f"@{args.step}")
    if args.adapter_only:
        return _export_adapter(args, spec, out)
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


def _export_adapter(args: argparse.Namespace, spec: str, out: Path) -> int:
    """The run's adapter factors as a peft adapter directory (``tuning.lora_export``)."""
    from circuitviz.models import ModelLoadError, load_model
    from circuitviz.models.runspec import resolve_run_spec
    from circuitviz.runs import RunStore
    from circuitviz.runs.checkpoints import load_tensors
    from circuitviz.tuning.lora import split_adapters
    from circuitviz.tuning.lora_export import save_peft_adapter

    try:
        weights = resolve_run_spec(spec, args.runs_dir)
        config = RunStore.default(args.runs_dir).open(weights.run_id).config
        if config.get("method") not in ("lora", "circuit-lora"):
            raise UserError(
                f"--adapter-only needs a lora or circuit-lora run; run {weights.run_id} used "
                f"method {config.get('method')!r}: export its weights without --adapter-only"
            )
        base = load_model(
            weights.base_spec, device="cpu", dtype=weights.dtype, runs_dir=args.runs_dir
        )
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc
    stored = load_tensors(weights.checkpoint)
    _, pairs = split_adapters(
        {k.removeprefix("param/"): v for k, v in stored.items() if k.startswith("param/")}
    )
    provenance = {
        "model": spec,
        "run_id": weights.run_id,
        "step": weights.step,
        "base_model": weights.base_spec,
        "method": config["method"],
        "dtype": str(base.dtype),
    }
    base_dir = base.source_dir
    has_weights = base_dir is not None and any(
        any(base_dir.glob(pattern)) for pattern in ("*.safetensors", "*.bin")
    )
    if not has_weights:
        base_dir = None  # a random: shape or a run: model has no weights directory to point at
    try:
        written = save_peft_adapter(
            base,
            pairs,
            out,
            rank=int(config["lora_rank"]),
            alpha=float(config["lora_alpha"]),
            dropout=float(config["lora_dropout"]),
            base_model=str(base_dir) if base_dir is not None else weights.base_spec,
            provenance=provenance,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        print_json({"out": str(out), "files": written, **provenance})
    else:
        print(
            f"wrote the adapters of {spec} (base {weights.base_spec}, step {weights.step}) to {out}"
        )
        print(f"  {', '.join(written)}")
    return 0
