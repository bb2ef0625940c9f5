"""The run store: the contract between the engine, which writes runs, and the dashboard and CLI,
which read them. One SQLite database (WAL) per run directory plus safetensors checkpoints; see
``writer`` (RunWriter), ``reader`` (Run) and ``store`` (RunStore)."""

from circuitviz.runs.errors import RunCorrupt, RunNotFound, RunStoreError
from circuitviz.runs.fields import new_run_id
from circuitviz.runs.reader import Run, Snapshot
from circuitviz.runs.store import RunStore, RunSummary, default_roots
from circuitviz.runs.writer import RunWriter

__all__ = [
    "Run",
    "RunCorrupt",
    "RunNotFound",
    "RunStore",
    "RunStoreError",
    "RunSummary",
    "RunWriter",
    "Snapshot",
    "default_roots",
    "new_run_id",
]
