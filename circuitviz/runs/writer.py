"""Writing a run: the tuning loop, sweeps and discovery record everything through ``RunWriter``.

Every public method is one SQLite transaction, committed before it returns, so a process killed at
any moment (kill -9) leaves a readable database holding every call that returned. Per-step rows are
upserts keyed by step: a run resumed from its last checkpoint replays the later steps and overwrites
what the killed process had written after that checkpoint, ending identical to an uninterrupted run
(apart from wall-clock ``time`` columns).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from circuitviz.runs import checkpoints as ckpt
from circuitviz.runs import schema
from circuitviz.runs.errors import RunNotFound, RunStoreError
from circuitviz.runs.lock import acquire_writer_lock, release_writer_lock

log = logging.getLogger(__name__)

KINDS = ("tune", "sweep", "discover")
STATUSES = ("running", "finished", "failed", "stopped")
LABELS = ("before", "during", "after")
HEAD_KINDS = ("q", "k", "v", "o", "mlp")
GRAPH_META_KEYS = ("n_layers", "n_heads", "n_kv_heads", "paper", "edge_names", "n_model_params")
STEP_COLUMNS = (
    "loss",
    "lr",
    "top_n",
    "n_nodes",
    "n_edges",
    "tuned_params_whole",
    "tuned_params_exact",
    "tuned_ratio",
    "discovered",
)
EVAL_COLUMNS = ("accuracy", "task_metric", "lm_loss")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PROBE_RE = re.compile(r"^(fixed|resample-\d+)$")


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def new_run_id(task: str, method: str) -> str:
    """``<task>-<method>-<YYYYmmdd-HHMMSS>-<4 hex>``, e.g. ``sv-circuit-20261123-141502-9f3a``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{_slug(task)}-{_slug(method)}-{stamp}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise ValueError(
            f"run_id must be 1-128 letters, digits, '.', '_' or '-' not starting with a symbol, "
            f"got {run_id!r}"
        )
    return run_id


def software_versions() -> dict[str, str | None]:
    """Versions from package metadata, so recording them never imports torch."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("circuitviz", "torch", "transformer-lens", "transformers", "numpy", "safetensors"):
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    versions["sqlite"] = sqlite3.sqlite_version
    return versions


class RunWriter:
    """The only way to write a run. Create with ``RunWriter.create`` or ``RunWriter.resume``; use as
    a context manager (an exception marks the run failed, Ctrl-C marks it stopped)."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.dir = Path(run_dir)
        self._conn = conn
        self._lock_fd = lock_fd
        row = conn.execute("SELECT run_id, graph_meta FROM run WHERE id = 1").fetchone()
        self.run_id: str = row[0]
        self.edge_names: list[str] = schema.load_json(row[1], str(self.dir))["edge_names"]
        self.n_edges = len(self.edge_names)
        self._status = conn.execute("SELECT status FROM run WHERE id = 1").fetchone()[0]

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: str | Path,
        run_id: str | None = None,
        *,
        kind: str = "tune",
        config: dict,
        model_spec: str,
        task: str,
        method: str,
        seed: int,
        graph_meta: dict,
        sweep_id: str | None = None,
    ) -> RunWriter:
        """Create ``<root>/<run_id>/run.sqlite`` with status "running" and return its writer.

        Raises ValueError for bad arguments and RunStoreError when ``root`` cannot be written or the
        run already exists; in both cases nothing is written.
        """
        _check_create_args(kind, config, model_spec, task, method, seed, graph_meta, sweep_id)
        run_id = check_run_id(run_id) if run_id is not None else new_run_id(task, method)
        root = _writable_root(Path(root))
        run_dir = root / run_id
        if run_dir.exists():
            raise RunStoreError(
                f"run {run_id!r} already exists at {run_dir}; choose another id, or continue it "
                f"with `circuitviz tune --resume {run_id}`"
            )
        try:
            run_dir.mkdir()
        except OSError as exc:
            raise RunStoreError(f"cannot create run directory {run_dir}: {exc}") from exc
        try:
            _create_database(
                run_dir,
                run_id=run_id,
                kind=kind,
                config=config,
                model_spec=model_spec,
                task=task,
                method=method,
                seed=seed,
                graph_meta=graph_meta,
                sweep_id=sweep_id,
            )
            lock_fd = acquire_writer_lock(run_dir)
            conn = schema.connect_write(schema.db_path(run_dir))
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # we made it; leave no half-created run
            raise
        log.info("created run %s at %s", run_id, run_dir)
        return cls(run_dir, conn, lock_fd)

    @classmethod
    def resume(cls, root_or_dir: str | Path, run_id: str | None = None) -> RunWriter:
        """Reopen a run for writing: ``resume(root, run_id)`` or ``resume(run_dir)``. Sets status
        back to "running"; rows the resumed run logs again replace the old ones."""
        run_dir = Path(root_or_dir) if run_id is None else Path(root_or_dir) / run_id
        path = schema.db_path(run_dir)
        if not path.is_file():
            from circuitviz.runs.store import RunStore

            where = Path(root_or_dir) if run_id is not None else run_dir.parent
            name = run_id if run_id is not None else run_dir.name
            raise RunNotFound(RunStore([where]).not_found_message(name))
        if not os.access(run_dir, os.W_OK):
            raise RunStoreError(f"cannot resume run {run_dir}: the directory is not writable")
        schema.check_schema(schema.connect_read(path), path)
        try:
            lock_fd = acquire_writer_lock(run_dir)
        except BlockingIOError as exc:
            raise RunStoreError(
                f"run {run_dir.name!r} is being written by another process ({run_dir}/run.lock); "
                "wait for it to finish or stop it first"
            ) from exc
        writer = cls(run_dir, schema.connect_write(path), lock_fd)
        writer.set_status("running")
        return writer

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._conn is not None and exc_type is not None and self._status == "running":
            if issubclass(exc_type, KeyboardInterrupt):
                self.set_status("stopped", "interrupted by the user")
            else:
                self.set_status("failed", f"{exc_type.__name__}: {exc}")
        self.close()

    # ---- per-step records ----------------------------------------------------------------------

    def log_step(
        self,
        step: int,
        *,
        loss: float,
        lr: float,
        top_n: int | None,
        n_nodes: int,
        n_edges: int,
        tuned_params_whole: int,
        tuned_params_exact: int,
        tuned_ratio: float,
        discovered: bool,
        **extra,
    ) -> None:
        """One row per optimizer step; ``extra`` keys become extra columns of ``Run.steps()``."""
        values = (
            _float(loss),
            _float(lr),
            None if top_n is None else int(top_n),
            int(n_nodes),
            int(n_edges),
            int(tuned_params_whole),
            int(tuned_params_exact),
            _float(tuned_ratio),
            int(bool(discovered)),
        )
        row = (_step(step), *values, time.time(), _extra_json(extra, STEP_COLUMNS))
        with self._transaction() as conn:
            conn.execute(f"INSERT OR REPLACE INTO steps VALUES ({', '.join('?' * len(row))})", row)

    def log_eval(
        self, step: int, *, accuracy: float, task_metric: float, lm_loss: float, **extra
    ) -> None:
        """Dev-split accuracy, task metric (mean logit difference) and held-out LM loss."""
        row = (
            _step(step),
            _float(accuracy),
            _float(task_metric),
            _float(lm_loss),
            time.time(),
            _extra_json(extra, EVAL_COLUMNS),
        )
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?, ?)", row)

    def add_snapshot(
        self, step: int, label: str, task: str, scores, selected, note: str = ""
    ) -> int:
        """Store one circuit: ``scores`` [n_edges] in valid-edge order (kept as float16, values past
        +-65504 clipped) and the boolean selection ``selected`` [n_edges]. Returns its snapshot_id;
        the same (step, label, task) again replaces the old snapshot and keeps its id."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        score_arr = self._edge_vector(scores, "scores", np.float32)
        mask_arr = self._edge_vector(selected, "selected", np.bool_)
        n_big = int(np.sum(np.abs(score_arr) > schema.FLOAT16_MAX))
        if n_big:
            log.warning(
                "snapshot step %d: %d scores beyond float16 range were clipped", step, n_big
            )
        row = (
            _step(step),
            label,
            task,
            str(note),
            self.n_edges,
            schema.pack_scores(score_arr),
            schema.pack_mask(mask_arr),
            time.time(),
        )
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO snapshots (step, label, task, note, n_edges, scores, selected, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (step, label, task) DO UPDATE SET "
                "note=excluded.note, n_edges=excluded.n_edges, scores=excluded.scores, "
                "selected=excluded.selected, time=excluded.time",
                row,
            )
            found = conn.execute(
                "SELECT snapshot_id FROM snapshots WHERE step=? AND label=? AND task=?",
                row[:3],
            ).fetchone()
        return int(found[0])

    def add_head_changes(self, step: int, rows: list[dict]) -> None:
        """Relative weight change ``||W_t - W_0|| / ||W_0||`` per head slice. Each row is a dict with
        layer, head (None or -1 for kind "mlp"), kind in q/k/v/o/mlp, rel_change."""
        step = _step(step)
        records = []
        for i, row in enumerate(rows):
            missing = {"layer", "kind", "rel_change"} - set(row)
            if missing:
                raise ValueError(f"rows[{i}] lacks {sorted(missing)}: {row!r}")
            if row["kind"] not in HEAD_KINDS:
                raise ValueError(
                    f"rows[{i}]['kind'] must be one of {HEAD_KINDS}, got {row['kind']!r}"
                )
            head = row.get("head")
            head = -1 if head is None else int(head)
            records.append((step, int(row["layer"]), head, row["kind"], _float(row["rel_change"])))
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO head_changes VALUES (?, ?, ?, ?, ?)", records)

    def add_noise_floor(self, step: int, probe: str, scores, std=None) -> None:
        """Scores of the checkpoint at ``step`` on probe set ``probe`` ("fixed" or "resample-K"),
        with the per-edge standard deviation over resampled probe sets (None for "fixed")."""
        if not isinstance(probe, str) or not _PROBE_RE.match(probe):
            raise ValueError(f"probe must be 'fixed' or 'resample-K' (K an integer), got {probe!r}")
        score_arr = self._edge_vector(scores, "scores", np.float32)
        std_blob = None
        if std is not None:
            std_blob = schema.pack_float32(self._edge_vector(std, "std", np.float32))
        row = (_step(step), probe, self.n_edges, schema.pack_float32(score_arr), std_blob)
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO noise_floor VALUES (?, ?, ?, ?, ?, ?)", (*row, time.time())
            )

    # ---- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, step: int, tensors: dict, resume_state: dict) -> Path:
        """Write ``checkpoints/step-XXXXXX.safetensors`` and its ``.state.pt`` atomically, then
        record them. Returns the safetensors path."""
        step = _step(step)
        tensor_path, state_path = ckpt.checkpoint_paths(self.dir, step)
        ckpt.save_resume_state(state_path, resume_state)
        ckpt.save_tensors(tensor_path, tensors)
        n_bytes = tensor_path.stat().st_size + state_path.stat().st_size
        row = (
            step,
            tensor_path.relative_to(self.dir).as_posix(),
            state_path.relative_to(self.dir).as_posix(),
            n_bytes,
            time.time(),
        )
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)", row)
        return tensor_path

    def latest_checkpoint(self) -> tuple[int, Path, dict] | None:
        """(step, safetensors path, resume_state) of the newest complete checkpoint, or None."""
        rows = self._conn.execute(
            "SELECT step, path, state_path FROM checkpoints ORDER BY step DESC"
        ).fetchall()
        for step, rel_path, rel_state in rows:
            path, state_path = self.dir / rel_path, self.dir / rel_state
            if path.is_file() and state_path.is_file():
                return int(step), path, ckpt.load_resume_state(state_path)
            log.warning("checkpoint of step %d is recorded but its files are missing", step)
        return None

    # ---- run-level fields ----------------------------------------------------------------------

    def set_status(self, status: str, message: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._transaction() as conn:
            conn.execute(
                "UPDATE run SET status=?, status_message=? WHERE id = 1",
                (status, None if message is None else str(message)),
            )
        self._status = status

    def set_summary(self, summary: dict) -> None:
        """Merge ``summary`` into the run's summary (final_accuracy, final_lm_loss, base_lm_loss,
        tuned_param_ratio, ...); a key given again is overwritten."""
        if not isinstance(summary, dict):
            raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
        with self._transaction() as conn:
            old = schema.load_json(
                conn.execute("SELECT summary FROM run WHERE id = 1").fetchone()[0], str(self.dir)
            )
            old.update(summary)
            conn.execute("UPDATE run SET summary=? WHERE id = 1", (schema.dump_json(old),))

    def close(self) -> None:
        """Commit nothing further and release the run. A run that is no longer running is folded
        back into a single file (WAL checkpointed, rollback journal), easy to copy or bundle."""
        if self._conn is None:
            return
        try:
            if self._status != "running":
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as exc:  # a reader holds the WAL: it stays in WAL mode
            log.info("run %s left in WAL mode: %s", self.run_id, exc)
        finally:
            self._conn.close()
            self._conn = None
            release_writer_lock(self._lock_fd)
            self._lock_fd = None

    # ---- internals -----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self):
        if self._conn is None:
            raise RunStoreError(f"run {self.run_id!r} is closed; resume it to write again")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("UPDATE run SET updated=? WHERE id = 1", (now_iso(),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _edge_vector(self, values, name: str, dtype) -> np.ndarray:
        if hasattr(values, "detach"):  # a torch tensor, without importing torch
            values = values.detach().to("cpu")
            values = (values if values.dtype.is_floating_point is False else values.float()).numpy()
        arr = np.asarray(values)
        if arr.shape != (self.n_edges,):
            raise ValueError(
                f"{name} must have shape ({self.n_edges},) (one value per valid edge, in "
                f"Graph.edge_index() order), got {arr.shape}"
            )
        if dtype == np.bool_ and arr.dtype != np.bool_:
            raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")
        return arr.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"RunWriter({str(self.dir)!r}, status={self._status!r})"


def _create_database(run_dir: Path, **fields) -> None:
    """Build the database under a temporary name and rename it into place, so that no reader ever
    sees a run.sqlite without its tables."""
    tmp = run_dir / f".{schema.DB_NAME}.tmp"
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.executescript(schema.DDL)
        conn.execute("BEGIN")
        created = now_iso()
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", str(schema.SCHEMA_VERSION)), ("created", created)],
        )
        conn.execute(
            "INSERT INTO run VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', NULL, '{}', ?, ?)",
            (
                fields["run_id"],
                fields["kind"],
                fields["task"],
                fields["method"],
                fields["model_spec"],
                int(fields["seed"]),
                fields["sweep_id"],
                schema.dump_json(fields["config"]),
                schema.dump_json(fields["graph_meta"]),
                schema.dump_json(software_versions()),
                created,
                created,
            ),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    os.replace(tmp, schema.db_path(run_dir))


def _writable_root(root: Path) -> Path:
    hint = "pass a writable --runs-dir or set $CIRCUITVIZ_RUNS"
    if root.exists() and not root.is_dir():
        raise RunStoreError(f"runs directory {root} is a file, not a directory; {hint}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunStoreError(f"cannot create runs directory {root}: {exc.strerror}; {hint}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunStoreError(f"runs directory {root} is not writable; {hint}")
    return root


def _check_create_args(kind, config, model_spec, task, method, seed, graph_meta, sweep_id) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for name, value in (("model_spec", model_spec), ("task", task), ("method", method)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    schema.dump_json(config)  # fail now, not half-way, if it is not JSON-serialisable
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if sweep_id is not None and not isinstance(sweep_id, str):
        raise ValueError(f"sweep_id must be a string or None, got {sweep_id!r}")
    if not isinstance(graph_meta, dict):
        raise ValueError(f"graph_meta must be a dict, got {type(graph_meta).__name__}")
    missing = [key for key in GRAPH_META_KEYS if key not in graph_meta]
    if missing:
        raise ValueError(f"graph_meta lacks {missing} (needs {list(GRAPH_META_KEYS)})")
    names = graph_meta["edge_names"]
    if (
        not isinstance(names, list | tuple)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError("graph_meta['edge_names'] must be a non-empty list of edge names")


def _step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _float(value) -> float | None:
    if value is None:
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return None if math.isnan(value) else value


def _extra_json(extra: dict, reserved: tuple[str, ...]) -> str:
    clash = [key for key in extra if key in reserved or key in ("step", "time")]
    if clash:
        raise ValueError(f"extra fields {clash} clash with fixed columns")
    clean = {}
    for key, value in extra.items():
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, str | int | float | bool | type(None)):
            raise ValueError(f"extra field {key!r} must be a scalar, got {type(value).__name__}")
        clean[key] = value
    return schema.dump_json(clean)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "run"
