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
        "Face directory, or a hub id",
    )
    group.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)"
    )
    group.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="default float32")


class UserError(Exception):
    """Raised by commands for bad input; printed as one line without a traceback, exit code 2."""


def load_model_from_args(args: argparse.Namespace):
    try:
        return load_model(args.model, device=args.device, dtype=args.dtype)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc


def print_json(payload: dict) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=_jsonable)
    sys.stdout.write("\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
