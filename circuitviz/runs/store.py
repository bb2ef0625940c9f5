"""Finding runs: ``RunStore`` lists and opens the runs under a few root directories.

Roots are searched in order; the first holding a run id wins. ``RunStore.default()`` uses
``$CIRCUITVIZ_RUNS`` (else ``./runs``) followed by the bundled ``assets/demo-runs``. A run is a
directory directly under a root that holds ``run.sqlite``. A run that cannot be read is listed with
status "corrupt" and its problem as the message, so one bad run never hides the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from circuitviz.runs import schema
from circuitviz.runs.errors import RunCorrupt, RunNotFound, RunStoreError
from circuitviz.runs.fields import RUN_ID_RE
from circuitviz.runs.reader import Run

ENV_VAR = "CIRCUITVIZ_RUNS"
DEMO_RUNS = Path(__file__).resolve().parents[2] / "assets" / "demo-runs"


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of ``list_runs()``. ``status`` is the recorded status, or "corrupt" with the problem
    in ``message``; ``live`` says whether a process holds the writer lock (None where unknown)."""

    id: str
    dir: Path
    status: str
    task: str | None
    method: str | None
    model: str | None
    created: str | None
    n_steps: int
    kind: str | None
    sweep_id: str | None
    message: str | None = None
    updated: str | None = None
    live: bool | None = None
    config: dict = field(default_factory=dict, repr=False)

    @property
    def shown_status(self) -> str:
        """ "stopped" for a run recorded as running whose writer is gone (stopped, killed)."""
        return "stopped" if self.status == "running" and self.live is False else self.status


def is_run_id(text: object) -> bool:
    """Whether ``text`` has the form of a run id (a directory name: no separators, no ``..``)."""
    return isinstance(text, str) and RUN_ID_RE.fullmatch(text) is not None and ".." not in text


def default_roots(runs_dir: str | Path | None = None) -> list[Path]:
    primary = Path(runs_dir) if runs_dir is not None else Path(os.environ.get(ENV_VAR) or "runs")
    return [primary, DEMO_RUNS]


class RunStore:
    def __init__(self, roots: list[str | Path] | tuple[str | Path, ...]) -> None:
        if isinstance(roots, str | Path):
            raise ValueError(f"roots must be a list of directories, got a single path {roots!r}")
        self.roots = [Path(root) for root in roots]

    @classmethod
    def default(cls, runs_dir: str | Path | None = None) -> RunStore:
        """``runs_dir`` (else $CIRCUITVIZ_RUNS, else ./runs) followed by the bundled demo runs."""
        return cls(default_roots(runs_dir))

    def run_dirs(self) -> dict[str, Path]:
        """run id -> directory, first root wins; ids are directory names."""
        found: dict[str, Path] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.is_dir() and (child / schema.DB_NAME).is_file():
                    found.setdefault(child.name, child)
        return found

    def list_runs(self) -> list[RunSummary]:
        """Every run under the roots, newest first."""
        summaries = [_summarise(run_id, run_dir) for run_id, run_dir in self.run_dirs().items()]
        return sorted(summaries, key=lambda s: (s.created or "", s.id), reverse=True)

    def open(self, run_id: str) -> Run:
        """Open a run by id (or by the path of a run directory). RunNotFound lists the known ids."""
        if not isinstance(run_id, str) or not run_id:
            raise RunNotFound(f"run id must be a non-empty string, got {run_id!r}")
        candidate = Path(run_id)
        if len(candidate.parts) > 1 and (candidate / schema.DB_NAME).is_file():
            return Run(candidate)
        run_dir = self.run_dirs().get(run_id)
        if run_dir is None:
            raise RunNotFound(self.not_found_message(run_id))
        return Run(run_dir)

    def not_found_message(self, run_id: str) -> str:
        where = ", ".join(str(root) for root in self.roots) or "(no roots)"
        known = sorted(self.run_dirs())
        if not known:
            return f"no run {run_id!r}: no runs exist under {where}"
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        return f"no run {run_id!r} under {where}; known runs: {shown}"


def _summarise(run_id: str, run_dir: Path) -> RunSummary:
    try:
        run = Run(run_dir)
        n_steps = run.counts()["steps"]
    except (RunCorrupt, RunStoreError, KeyError, TypeError, ValueError) as exc:
        mtime = datetime.fromtimestamp(run_dir.stat().st_mtime).astimezone()
        return RunSummary(
            id=run_id,
            dir=run_dir,
            status="corrupt",
            task=None,
            method=None,
            model=None,
            created=mtime.isoformat(timespec="seconds"),
            n_steps=0,
            kind=None,
            sweep_id=None,
            message=str(exc),
        )
    return RunSummary(
        id=run_id,
        dir=run_dir,
        status=run.status,
        task=run.task,
        method=run.method,
        model=run.model_spec,
        created=run.created,
        n_steps=n_steps,
        kind=run.kind,
        sweep_id=run.sweep_id,
        message=run.status_message,
        updated=run.updated,
        live=run.is_live() if run.status == "running" else False,
        config=dict(run.config or {}),
    )
