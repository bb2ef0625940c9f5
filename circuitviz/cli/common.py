"""Argument groups shared by commands, and turning them into engine objects.

Nothing here imports torch: a command's ``--help`` must answer at once. The engine is imported
inside the functions that need it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from circuitviz.models.spec import DTYPE_NAMES, MODEL_SPEC_HELP


class UserError(Exception):
    """Raised by commands for bad input; printed as one line without a traceback, exit code 2."""


def message_of(exc: BaseException) -> str:
    """An exception's message as written (a KeyError's ``str`` adds quotes around it)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="demo", help=MODEL_SPEC_HELP)
    group.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)"
    )
    group.add_argument(
        "--dtype",
        default=None,
        choices=DTYPE_NAMES,
        help="default float32 (for run: models, the run's own dtype)",
    )


def require_app_extra(what: str) -> None:
    """The dashboard and figure export need the ``app`` extra (streamlit, plotly, matplotlib)."""
    import importlib.util

    missing = [
        m for m in ("streamlit", "plotly", "matplotlib") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise UserError(
            f"{what} needs {', '.join(missing)}, which this installation lacks: "
            "pip install 'circuitviz[app]' (./run.sh app installs it)"
        )


def load_model_from_args(args: argparse.Namespace):
    """The model of ``--model``; ``run:`` specs are looked up under ``--runs-dir`` (when the command
    has one) before the default run roots."""
    from circuitviz.models import ModelLoadError, load_model

    runs_dir = getattr(args, "runs_dir", None)
    try:
        return load_model(
            args.model,
            device=args.device,
            dtype=args.dtype,
            runs_dir=runs_dir if isinstance(runs_dir, str | Path) else None,
        )
    except ModelLoadError as exc:
        raise UserError(str(exc)) from exc


def check_output_file(path: Path, suffixes: tuple[str, ...], *, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written where the user asked."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: use a {' or '.join(suffixes)} file")
    check_writable(path, flag=flag)


def check_writable(path: Path, *, flag: str) -> None:
    """Refuse, before any work, a file path that cannot be written: a missing or read-only
    directory, a file where the directory should be, or a directory where the file should be."""
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise UserError(f"{flag} {path}: the directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a directory")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: the directory {parent} is not writable")


def print_json(payload: dict, *, nan_as_null: bool = False) -> None:
    """Standard JSON on stdout. A NaN or infinity has no JSON form: for a computed result it is an
    error (a command never reports a number computed from nothing); ``nan_as_null`` writes null
    instead, for listings of stored records where a missing value is a fact, not a result."""
    checked = _check_finite(payload, "", nan_as_null)
    json.dump(checked, sys.stdout, indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
    sys.stdout.write("\n")


def finite_or_none(value):
    """``value`` with every NaN or infinite float replaced by None: for figures that may not apply
    (an accuracy over a tag no example carries), written as JSON null."""
    return _check_finite(value, "", True)


def _check_finite(value, where: str, nan_as_null: bool):
    if isinstance(value, float) and not math.isfinite(value):
        if nan_as_null:
            return None
        raise UserError(f"the result {where.strip('.') or 'value'} is {value}: nothing to report")
    if isinstance(value, dict):
        return {k: _check_finite(v, f"{where}.{k}", nan_as_null) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_check_finite(v, f"{where}[{i}]", nan_as_null) for i, v in enumerate(value)]
    return value


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
