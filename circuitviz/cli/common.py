"""Argument groups shared by commands, and turning them into engine objects."""

from __future__ import annotations

import argparse
import json
import sys

from circuitviz.models import DTYPES, ModelLoadError, load_model


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="demo",
        help="demo (default), smollm2-135m, random:gpt2, random:PATH.json, a .gguf file, a Hugging "
        "Face directory, a hub id, or a tuning run's weights: run:RUN (final) or run:RUN@STEP "
        "(a checkpoint)",
    )
    group.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)"
    )
    group.add_argument(
        "--dtype",
        default=None,
        choices=sorted(DTYPES),
        help="default float32 (for run: models, the run's own dtype)",
    )


class UserError(Exception):
    """Raised by commands for bad input; printed as one line without a traceback, exit code 2."""


def load_model_from_args(args: argparse.Namespace):
    """The model of ``--model``; ``run:`` specs are looked up under ``--runs-dir`` (when the command
    has one) before the default run roots."""
    runs_dir = getattr(args, "runs_dir", None)
    try:
        return load_model(
            args.model,
            device=args.device,
            dtype=args.dtype,
            runs_dir=runs_dir if isinstance(runs_dir, str) else None,
        )
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc


def finite_or_none(value):
    """``value`` with every NaN or infinite float replaced by None, so JSON output stays JSON."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def print_json(payload: dict) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=_jsonable)
    sys.stdout.write("\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
