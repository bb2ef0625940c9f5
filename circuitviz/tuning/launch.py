"""torch's launcher (``torch.distributed.run``) for ``tune --nproc``, quiet when a worker fails.

    python -m circuitviz.tuning.launch [--run-dir DIR --continue-with CMD] <torchrun arguments>

A worker that stops on bad input, or because another process of the run went away, has said why
in one line; the launcher would add its own report and a traceback. This runs the launcher with
its logging at errors only and, when a worker fails:

1. exits with the workers' exit code (2 for bad input, as in one process) when rank 0, the one
   worker that speaks, exited with a code of its own, or when a worker did and rank 0 was stopped
   by the launcher (every worker met the same bad input; rank 0 finishes its line first);
2. otherwise rank 0 ended without a word: it was killed (kill -9, the OOM killer), or the launcher
   SIGTERMed it when another worker died, before gloo told it. Then this says it, in one line
   naming the process that died and how, and marks the run (``--run-dir``) failed with every step
   it recorded where it is still recorded as running; ``--continue-with`` is the command that
   resumes it. Exit code 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as launch

OWN_OPTIONS = ("--run-dir", "--continue-with")
# How rank 0's line on a lost peer begins; it records the line as the run's status message.
LOST_PEER = "another process of this run stopped"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = {}
    while argv and argv[0] in OWN_OPTIONS and len(argv) > 1:
        own[argv[0]] = argv[1]
        argv = argv[2:]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    run_dir = own.get("--run-dir")
    before = _state(Path(run_dir)) if run_dir else None
    try:
        launch(argv)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode > 0]
        rank_0 = exc.failures.get(0)
        if rank_0 is not None and rank_0.exitcode > 0:  # rank 0 said why (it alone speaks)
            return max(codes)
        after = _state(Path(run_dir)) if run_dir else None
        if after is not None and after != before and after[1].startswith(LOST_PEER):
            return 2  # rank 0 said it and recorded it, then the launcher's SIGTERM ended it
        killed = rank_0 is not None and rank_0.exitcode < 0 and rank_0.signal_name() != "SIGTERM"
        if codes and not killed:
            # Bad input that every worker met: another stopped first, and rank 0, stopped by the
            # launcher while saying it, ignores SIGTERM until it has (``cli.main``).
            return max(codes)
        _report(exc, run_dir, after, own.get("--continue-with"))
        return 1
    return 0


def _report(exc: ChildFailedError, run_dir: str | None, state, continue_with: str | None) -> None:
    """One line for a run whose rank 0 ended without saying why (killed, or SIGTERMed by the
    launcher after another worker died); a run still recorded as running is marked failed.
    ``state``: the run's (``_state``) as the workers left it."""
    cause = _cause(exc)
    status = None if state is None else state[0]
    if status is None:  # no run yet: the workers died before creating it
        print(f"error: {cause}, and torch's launcher stopped the others", file=sys.stderr)
        return
    if status == "running":
        status = "failed" if _mark_failed(Path(run_dir), cause) else "running"
    hint = f" Continue it with: {continue_with}" if continue_with else ""
    print(
        f"error: {cause}, and torch's launcher stopped the others; run {Path(run_dir).name} is "
        f"kept at {run_dir} as {status} with every step recorded so far.{hint}",
        file=sys.stderr,
    )


def _cause(exc: ChildFailedError) -> str:
    """The failure that started it: a worker ended by a signal other than the SIGTERM the
    launcher sends the rest, else the first failure."""
    failures = sorted(exc.failures.items())
    killed = [(r, f) for r, f in failures if f.exitcode < 0 and f.signal_name() != "SIGTERM"]
    rank, failure = killed[0] if killed else exc.get_first_failure()
    if failure.exitcode < 0:
        return f"process {rank} of this run was ended by {failure.signal_name()}"
    return f"process {rank} of this run exited with code {failure.exitcode}"


def _state(run_dir: Path) -> tuple[str, str, str] | None:
    """(status, status message, last update) of the run at ``run_dir``; None where there is none."""
    from circuitviz.runs import Run, RunStoreError

    try:
        run = Run(run_dir)
    except (RunStoreError, OSError):
        return None
    return run.status, run.status_message or "", run.updated


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
