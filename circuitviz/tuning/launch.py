"""torch's launcher (``torch.distributed.run``) for ``tune --nproc``, quiet when a worker fails.

    python -m circuitviz.tuning.launch [--run-dir DIR --continue-with CMD] <torchrun arguments>

A worker that stops on bad input, or because another process of the run went away, has said why
in one line; the launcher would add its own report and a traceback. This runs the launcher with
its logging at errors only and, when a worker fails:

1. exits with that worker's exit code (2 for bad input, as in one process) when one exited with a
   code of its own;
2. otherwise every worker ended by a signal: one was killed (kill -9, the OOM killer) and the
   launcher SIGTERMed the rest, possibly before any of them could say so. Then this says it, in
   one line naming the process and the signal, and marks the run (``--run-dir``) failed with every
   step it recorded, unless a worker already did; ``--continue-with`` is the command to resume it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as launch

OWN_OPTIONS = ("--run-dir", "--continue-with")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = {}
    while argv and argv[0] in OWN_OPTIONS and len(argv) > 1:
        own[argv[0]] = argv[1]
        argv = argv[2:]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch(argv)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        own_codes = [code for code in codes if code > 0]
        if own_codes:
            return max(own_codes)
        _report_signal(exc, own.get("--run-dir"), own.get("--continue-with"))
        return 1
    return 0


def _report_signal(exc: ChildFailedError, run_dir: str | None, continue_with: str | None) -> None:
    """One line for a run whose workers all ended by a signal, the run marked failed; nothing
    where a worker already marked it (and said why)."""
    rank, failure = exc.get_first_failure()
    cause = f"process {rank} of this run was ended by {failure.signal_name()}"
    status = _status(Path(run_dir)) if run_dir else None
    if status is None:  # no run yet: the workers died before creating it
        print(f"error: {cause}, and torch's launcher stopped the others", file=sys.stderr)
        return
    if status != "running":
        return
    kept = (
        "as failed" if _mark_failed(Path(run_dir), cause) else "(its status could not be written)"
    )
    hint = f" Continue it with: {continue_with}" if continue_with else ""
    print(
        f"error: {cause}, and torch's launcher stopped the others; run {Path(run_dir).name} is "
        f"kept at {run_dir} {kept} with every step recorded so far.{hint}",
        file=sys.stderr,
    )


def _status(run_dir: Path) -> str | None:
    from circuitviz.runs import Run, RunStoreError

    try:
        return Run(run_dir).status
    except (RunStoreError, OSError):
        return None


def _mark_failed(run_dir: Path, cause: str) -> bool:
    """Record ``cause`` as the run's failure; False where the run cannot be written."""
    from circuitviz.runs import RunStoreError, RunWriter

    try:
        writer = RunWriter.resume(run_dir, mark_running=False)
    except (RunStoreError, OSError):
        return False
    try:
        writer.set_status("failed", cause)
    finally:
        writer.close()
    return True


if __name__ == "__main__":
    sys.exit(main())
