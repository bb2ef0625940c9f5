"""The ``circuitviz`` command line: ``circuitviz <command> --help`` for each command.

Each command lives in its own module exposing ``register(subparsers)``; that function adds the
command's parser and sets ``func`` to a callable taking the parsed namespace and returning an exit code.
The CLI is the only place (besides the app) that turns user input into engine configs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from circuitviz.cli.common import UserError

# Command modules, in the order `--help` lists them. A module that does not exist yet is skipped so
# that the CLI keeps working while commands are added.
COMMAND_MODULES = (
    "circuitviz.cli.evaluate",
    "circuitviz.cli.graph",
    "circuitviz.cli.discover",
    "circuitviz.cli.tune",
    "circuitviz.cli.runs",
    "circuitviz.cli.app",
    "circuitviz.cli.export",
    "circuitviz.cli.export_model",
    "circuitviz.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitviz",
        description="Discover circuits, circuit-tune models, and watch circuits change while they learn.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        # transformers and datasets draw a progress bar for every weight file they read; a command's
        # own output (and a one-line error) should not drown in them. -v (or the variable) keeps them.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # imported before (tests, the app): switch it off there
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"circuitviz {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
