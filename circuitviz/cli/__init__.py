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
import signal
import sys

from circuitviz.cli.common import UserError
from circuitviz.threads import limit_this_process, thread_env_problem

# Command modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "circuitviz.cli.evaluate",
    "circuitviz.cli.graph",
    "circuitviz.cli.discover",
    "circuitviz.cli.tune",
    "circuitviz.cli.analyse",
    "circuitviz.cli.runs",
    "circuitviz.cli.compare",
    "circuitviz.cli.harness",
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
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: $CIRCUITVIZ_THREADS, else $OMP_NUM_THREADS, else "
        "every CPU this process may use)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start worker processes with
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
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.threads is None and (problem := thread_env_problem()) is not None:
        print(f"circuitviz {args.command}: error: {problem}", file=sys.stderr)
        return 2
    limit_this_process(args.threads)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a piped stdout is buffered: meet a closed reader here, not at exit
        return code
    except BrokenPipeError:
        if not _reader_gone():
            raise  # a pipe of the command's own (a subprocess, a socket), not its output
        # The reader stopped reading (``| head``): the rest has nowhere to go. Point stdout at
        # devnull so that the interpreter's final flush does not raise again, and end as a
        # program stopped by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except UserError as exc:
        # In a data-parallel run every rank meets the same bad input; rank 0 says so once, and
        # finishes saying it even when torch's launcher, seeing another rank stop first, sends it
        # SIGTERM (``tuning.launch``).
        if os.environ.get("RANK", "0") == "0":
            if "WORLD_SIZE" in os.environ:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"circuitviz {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout has no descriptor
        return True


if __name__ == "__main__":
    sys.exit(main())
