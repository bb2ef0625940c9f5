"""Writing a run: the tuning loop, sweeps and discovery record everything through ``RunWriter``.

Every public method is one SQLite transaction, committed before it returns, so a process killed at
any moment (kill -9) leaves a readable database holding every call that returned. Per-step rows are
upserts keyed by step: a run resumed from its last checkpoint replays the later steps and overwrites
what the killed process had written after that checkpoint, ending identical to an uninterrupted run
(apart from wall-clock ``time`` columns).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from circuitviz.runs import checkpoints as ckpt
from circuitviz.runs import fields, schema
from circuitviz.runs.errors import RunNotFound, RunStoreError
from circuitviz.runs.lock import acquire_writer_lock, release_writer_lock

log = logging.getLogger(__name__)


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
        fields.check_create_args(kind, config, model_spec, task, method, seed, graph_meta, sweep_id)
        run_id = (
            fields.check_run_id(run_id)
            if run_id is not None
            else fields.new_run_id(fields.task_slug(task), method)
        )
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
        lock_fd = None
        try:
            lock_fd = acquire_writer_lock(run_dir)  # before the database exists: never unlocked
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
            conn = schema.connect_write(schema.db_path(run_dir))
        except BaseException:
            release_writer_lock(lock_fd)
            shutil.rmtree(run_dir, ignore_errors=True)  # we made it; leave no half-created run
            raise
        log.info("created run %s at %s", run_id, run_dir)
        return cls(run_dir, conn, lock_fd)

    @classmethod
    def resume(
        cls, root_or_dir: str | Path, run_id: str | None = None, *, mark_running: bool = True
    ) -> RunWriter:
        """Reopen a run for writing: ``resume(root, run_id)`` or ``resume(run_dir)``. Sets status
        back to "running"; rows the resumed run logs again replace the old ones. With
        ``mark_running`` off the status is left as it is (``analyse``, ``rescore``: they add to a
        finished run, which stays finished even if they are killed)."""
        run_dir = Path(root_or_dir) if run_id is None else Path(root_or_dir) / run_id
        path = schema.db_path(run_dir)
        if not path.is_file():
            from circuitviz.runs.store import RunStore

            where = Path(root_or_dir) if run_id is not None else run_dir.parent
            name = run_id if run_id is not None else run_dir.name
            raise RunNotFound(RunStore([where]).not_found_message(name))
        if not (os.access(run_dir, os.W_OK) and os.access(path, os.W_OK)):
            raise RunStoreError(f"cannot resume run {run_dir}: it is not writable")
        probe = schema.connect_read(path)
        try:
            schema.check_schema(probe, path)  # RunCorrupt before anything is written
        finally:
            probe.close()
        try:
            lock_fd = acquire_writer_lock(run_dir)
        except BlockingIOError as exc:
            raise RunStoreError(
                f"run {run_dir.name!r} is being written by another process ({run_dir}/run.lock); "
                "wait for it to finish or stop it first"
            ) from exc
        try:
            writer = cls(run_dir, schema.connect_write(path), lock_fd)
        except BaseException:
            release_writer_lock(lock_fd)
            raise
        if ckpt.remove_partial_files(run_dir):
            log.info("run %s: removed half-written checkpoint files", writer.run_id)
        if mark_running:
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
            fields.to_float(loss),
            fields.to_float(lr),
            None if top_n is None else int(top_n),
            int(n_nodes),
            int(n_edges),
            int(tuned_params_whole),
            int(tuned_params_exact),
            fields.to_float(tuned_ratio),
            int(bool(discovered)),
        )
        row = (
            fields.to_step(step),
            *values,
            time.time(),
            fields.extra_json(extra, fields.STEP_COLUMNS),
        )
        with self._transaction() as conn:
            conn.execute(f"INSERT OR REPLACE INTO steps VALUES ({', '.join('?' * len(row))})", row)

    def log_eval(
        self, step: int, *, accuracy: float, task_metric: float, lm_loss: float, **extra
    ) -> None:
        """Dev-split accuracy, task metric (mean logit difference) and held-out LM loss."""
        row = (
            fields.to_step(step),
            fields.to_float(accuracy),
            fields.to_float(task_metric),
            fields.to_float(lm_loss),
            time.time(),
            fields.extra_json(extra, fields.EVAL_COLUMNS),
        )
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?, ?)", row)

    def add_snapshot(
        self, step: int, label: str, task: str, scores, selected, note: str = ""
    ) -> int:
        """Store one circuit: ``scores`` [n_edges] in valid-edge order (kept as float16, values past
        +-65504 clipped) and the boolean selection ``selected`` [n_edges]. Returns its snapshot_id;
        the same (step, label, task) again replaces the old snapshot and keeps its id."""
        if label not in fields.LABELS:
            raise ValueError(f"label must be one of {fields.LABELS}, got {label!r}")
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        score_arr = fields.edge_vector(scores, "scores", np.float32, self.n_edges)
        mask_arr = fields.edge_vector(selected, "selected", np.bool_, self.n_edges)
        n_big = int(np.sum(np.abs(score_arr) > schema.FLOAT16_MAX))
        if n_big:
            log.warning(
                "snapshot step %d: %d scores beyond float16 range were clipped", step, n_big
            )
        row = (
            fields.to_step(step),
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
        layer, head (None or -1 for kind "mlp"; for an MLP neuron group ``m{L}.g{j}``, the group j),
        kind in q/k/v/o/mlp, rel_change."""
        step = fields.to_step(step)
        records = []
        for i, row in enumerate(rows):
            missing = {"layer", "kind", "rel_change"} - set(row)
            if missing:
                raise ValueError(f"rows[{i}] lacks {sorted(missing)}: {row!r}")
            if row["kind"] not in fields.HEAD_KINDS:
                raise ValueError(
                    f"rows[{i}]['kind'] must be one of {fields.HEAD_KINDS}, got {row['kind']!r}"
                )
            head = row.get("head")
            head = -1 if head is None else int(head)
            records.append(
                (step, int(row["layer"]), head, row["kind"], fields.to_float(row["rel_change"]))
            )
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO head_changes VALUES (?, ?, ?, ?, ?)", records)

    def add_noise_floor(self, step: int, probe: str, scores, std=None) -> None:
        """Scores of the checkpoint at ``step`` on probe set ``probe`` ("fixed" or "resample-K"),
        with the per-edge standard deviation over resampled probe sets (None for "fixed")."""
        if not isinstance(probe, str) or not fields.PROBE_RE.match(probe):
            raise ValueError(f"probe must be 'fixed' or 'resample-K' (K an integer), got {probe!r}")
        score_arr = fields.edge_vector(scores, "scores", np.float32, self.n_edges)
        std_blob = None
        if std is not None:
            std_blob = schema.pack_float32(fields.edge_vector(std, "std", np.float32, self.n_edges))
        row = (fields.to_step(step), probe, self.n_edges, schema.pack_float32(score_arr), std_blob)
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO noise_floor VALUES (?, ?, ?, ?, ?, ?)", (*row, time.time())
            )

    def clear_analyses(self, kinds) -> None:
        """Remove every stored row of these analysis kinds (before they are computed again, so no
        row of an earlier analysis survives beside the new ones)."""
        kinds = list(kinds)
        if not kinds:
            return
        with self._transaction() as conn:
            conn.execute(schema.ANALYSES_DDL)
            marks = ",".join("?" * len(kinds))
            conn.execute(f"DELETE FROM analyses WHERE kind IN ({marks})", kinds)

    def add_analysis(self, step: int, kind: str, values: dict[str, float]) -> None:
        """One analysis of the weights at ``step`` (``circuitviz.analysis``): ``key -> number``,
        replacing what an earlier analysis of the same step and kind wrote under those keys."""
        if not kind or not isinstance(kind, str):
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        now = time.time()
        rows = [
            (fields.to_step(step), kind, str(key), None if v is None else float(v), now)
            for key, v in values.items()
        ]
        with self._transaction() as conn:
            conn.execute(schema.ANALYSES_DDL)  # runs written before analyses existed lack it
            conn.executemany("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?)", rows)

    # ---- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, step: int, tensors: dict, resume_state: dict) -> Path:
        """Write ``checkpoints/step-XXXXXX.safetensors`` and its ``.state.pt`` atomically, then
        record them. Returns the safetensors path."""
        step = fields.to_step(step)
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

    def checkpoint_files(self) -> list[tuple[int, Path, Path]]:
        """(step, tensors path, resume-state path) of every recorded checkpoint, oldest first."""
        rows = (
            self._open()
            .execute("SELECT step, path, state_path FROM checkpoints ORDER BY step")
            .fetchall()
        )
        return [(int(step), self.dir / path, self.dir / state) for step, path, state in rows]

    def latest_checkpoint(self) -> tuple[int, Path, dict] | None:
        """(step, safetensors path, resume_state) of the newest complete checkpoint, or None."""
        rows = (
            self._open()
            .execute("SELECT step, path, state_path FROM checkpoints ORDER BY step DESC")
            .fetchall()
        )
        for step, rel_path, rel_state in rows:
            path, state_path = self.dir / rel_path, self.dir / rel_state
            if path.is_file() and state_path.is_file():
                return int(step), path, ckpt.load_resume_state(state_path)
            log.warning("checkpoint of step %d is recorded but its files are missing", step)
        return None

    # ---- run-level fields ----------------------------------------------------------------------

    def set_status(self, status: str, message: str | None = None) -> None:
        if status not in fields.STATUSES:
            raise ValueError(f"status must be one of {fields.STATUSES}, got {status!r}")
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
                # Wait briefly only: a reader holding the database keeps it in WAL mode, harmlessly.
                self._conn.execute("PRAGMA busy_timeout=200")
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

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RunStoreError(f"run {self.run_id!r} is closed; resume it to write again")
        return self._conn

    @contextmanager
    def _transaction(self):
        """One committed transaction; a SQLite failure (disk full, I/O error) rolls it back and
        becomes a RunStoreError naming the database; earlier commits are untouched."""
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("UPDATE run SET updated=? WHERE id = 1", (fields.now_iso(),))
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise RunStoreError(f"{self.dir / schema.DB_NAME}: write failed ({exc})") from exc

    def __repr__(self) -> str:
        return f"RunWriter({str(self.dir)!r}, status={self._status!r})"


def add_to_summary(run_dir: str | Path, key: str, entries: dict) -> dict:
    """Merge ``entries`` into the dict ``summary[key]`` of a run that is not being written (results
    computed after the run, such as ``circuitviz harness`` benchmarks), in one transaction under
    the writer lock, leaving its status as it is. Returns the merged ``summary[key]``. Raises
    RunStoreError for a run another process writes or a directory that is not writable."""
    run_dir = Path(run_dir)
    path = schema.db_path(run_dir)
    if not path.is_file():
        from circuitviz.runs.store import RunStore

        raise RunNotFound(RunStore([run_dir.parent]).not_found_message(run_dir.name))
    if not (os.access(run_dir, os.W_OK) and os.access(path, os.W_OK)):
        raise RunStoreError(f"run {run_dir.name!r} is not writable ({run_dir})")
    try:
        lock_fd = acquire_writer_lock(run_dir)
    except BlockingIOError as exc:
        raise RunStoreError(
            f"run {run_dir.name!r} is being written by another process; wait for it to finish"
        ) from exc
    try:
        writer = RunWriter(run_dir, schema.connect_write(path), lock_fd)
    except BaseException:
        release_writer_lock(lock_fd)
        raise
    try:
        with writer._transaction() as conn:
            summary = schema.load_json(
                conn.execute("SELECT summary FROM run WHERE id = 1").fetchone()[0], str(run_dir)
            )
            merged = dict(summary.get(key) or {}) | dict(entries)
            summary[key] = merged
            conn.execute("UPDATE run SET summary=? WHERE id = 1", (schema.dump_json(summary),))
    finally:
        writer.close()
    return merged


def _create_database(run_dir: Path, **row) -> None:
    """Build the database under a temporary name and rename it into place, so that no reader ever
    sees a run.sqlite without its tables."""
    tmp = run_dir / f".{schema.DB_NAME}.tmp"
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.executescript(schema.DDL + schema.ANALYSES_DDL)
        conn.execute("BEGIN")
        created = fields.now_iso()
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", str(schema.SCHEMA_VERSION)), ("created", created)],
        )
        conn.execute(
            "INSERT INTO run VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', NULL, '{}', ?, ?)",
            (
                row["run_id"],
                row["kind"],
                row["task"],
                row["method"],
                row["model_spec"],
                int(row["seed"]),
                row["sweep_id"],
                schema.dump_json(row["config"]),
                schema.dump_json_compressed(row["graph_meta"]),
                schema.dump_json(fields.software_versions()),
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
