"""Reading a run: ``Run`` is the dashboard's and the CLI's only view of a run's database.

Every read opens a short-lived read-only connection (``file:...?mode=ro``): a reader can never
modify a run, never blocks its writer (WAL), always sees the latest committed rows, and a ``Run``
may be shared between threads (Streamlit reruns). Run-level fields (status, summary, ...) are read
when the Run is made; ``refresh()`` re-reads them while following a live run. Nothing here imports
torch except ``graph()`` and ``load_checkpoint()``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from circuitviz.runs import checkpoints as ckpt
from circuitviz.runs import schema
from circuitviz.runs.errors import RunCorrupt, RunStoreError
from circuitviz.runs.fields import STEP_COLUMNS
from circuitviz.runs.lock import writer_alive

_LABEL_ORDER = "CASE label WHEN 'before' THEN 0 WHEN 'during' THEN 1 ELSE 2 END, step, snapshot_id"
_STEP_COLUMNS = ("step", *STEP_COLUMNS, "time")
_EVAL_COLUMNS = ("step", "accuracy", "task_metric", "lm_loss", "time")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One stored circuit. ``scores`` [n_edges] float32 (stored as float16) and ``selected``
    [n_edges] bool are in valid-edge order (``Graph.edge_index()``)."""

    snapshot_id: int
    step: int
    label: str
    task: str
    note: str
    scores: np.ndarray = field(repr=False)
    selected: np.ndarray = field(repr=False)


class Run:
    """A run directory opened for reading. Raises RunCorrupt (naming the file and the problem) if
    its database cannot be read."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.dir = path.parent if path.name == schema.DB_NAME else path
        self.db_path = schema.db_path(self.dir)
        self.refresh()

    # ---- run-level fields ----------------------------------------------------------------------

    def refresh(self) -> Run:
        """Re-read the run row (status, summary, ...); per-step data is always read live."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT run_id, kind, task, method, model_spec, seed, sweep_id, config, versions, "
                "status, status_message, summary, created, updated FROM run WHERE id = 1"
            ).fetchone()
        if row is None:
            raise RunCorrupt(f"{self.db_path}: the run table is empty")
        where = str(self.db_path)
        (self.id, self.kind, self.task, self.method, self.model_spec, self.seed, self.sweep_id) = (
            row[:7]
        )
        self.config: dict = schema.load_json(row[7], where)
        self.versions: dict = schema.load_json(row[8], where)
        self.status: str = row[9]
        self.status_message: str | None = row[10]
        self.summary: dict = schema.load_json(row[11], where)
        self.created: str = row[12]
        self.updated: str = row[13]
        self._graph_meta: dict | None = None
        return self

    def is_live(self) -> bool | None:
        """Whether a process is writing this run now (None where unknown). A run whose status is
        "running" but that is not live was killed; it can be continued with ``tune --resume``."""
        return writer_alive(self.dir)

    @property
    def graph_meta(self) -> dict:
        if self._graph_meta is None:
            with self._connect() as conn:
                text = conn.execute("SELECT graph_meta FROM run WHERE id = 1").fetchone()[0]
            self._graph_meta = schema.load_json(text, str(self.db_path))
        return self._graph_meta

    def edge_names(self) -> list[str]:
        return list(self.graph_meta["edge_names"])

    @property
    def n_edges(self) -> int:
        return len(self.graph_meta["edge_names"])

    def graph(self):
        """The ``circuitviz.graph.topology.Graph`` the run's per-edge vectors index; RunCorrupt if the
        rebuilt graph's edges differ from the recorded edge names."""
        from circuitviz.graph.topology import build_graph

        meta = self.graph_meta
        graph = build_graph(
            meta["n_layers"],
            meta["n_heads"],
            meta["n_kv_heads"],
            paper=bool(meta["paper"]),
            mlp_groups=meta.get("mlp_groups"),
        )
        if graph.edge_names() != meta["edge_names"]:
            raise RunCorrupt(
                f"{self.db_path}: recorded edge names do not match the graph rebuilt from "
                f"n_layers={meta['n_layers']}, n_heads={meta['n_heads']}, paper={meta['paper']}"
            )
        return graph

    # ---- tables --------------------------------------------------------------------------------

    def steps(self) -> pd.DataFrame:
        """One row per optimizer step, ordered by step; extra logged fields are extra columns."""
        rows = self._query(f"SELECT {', '.join(_STEP_COLUMNS)}, extra FROM steps ORDER BY step")
        frame = _frame_with_extras(rows, _STEP_COLUMNS, str(self.db_path))
        frame["discovered"] = frame["discovered"].astype(bool)
        return _ints_where_complete(frame, ("step", "top_n", "n_nodes", "n_edges"))

    def evals(self) -> pd.DataFrame:
        rows = self._query(f"SELECT {', '.join(_EVAL_COLUMNS)}, extra FROM evals ORDER BY step")
        return _ints_where_complete(
            _frame_with_extras(rows, _EVAL_COLUMNS, str(self.db_path)), ("step",)
        )

    def snapshots(self) -> pd.DataFrame:
        """snapshot_id, step, label, task, note; ordered before, during (by step), after."""
        rows = self._query(
            f"SELECT snapshot_id, step, label, task, note FROM snapshots ORDER BY {_LABEL_ORDER}"
        )
        columns = ["snapshot_id", "step", "label", "task", "note"]
        return _ints_where_complete(pd.DataFrame(rows, columns=columns), ("snapshot_id", "step"))

    def snapshot(self, snapshot_id: int) -> Snapshot:
        rows = self._query(
            "SELECT snapshot_id, step, label, task, note, n_edges, scores, selected FROM snapshots "
            "WHERE snapshot_id = ?",
            (int(snapshot_id),),
        )
        if not rows:
            known = self.snapshots()["snapshot_id"].tolist()
            raise KeyError(f"run {self.id!r} has no snapshot {snapshot_id}; it has {known}")
        sid, step, label, task, note, n_edges, scores, selected = rows[0]
        where = self._blob_where(f"snapshot {sid}", n_edges)
        return Snapshot(
            snapshot_id=sid,
            step=step,
            label=label,
            task=task,
            note=note,
            scores=schema.unpack_scores(scores, n_edges, where),
            selected=schema.unpack_mask(selected, n_edges, where),
        )

    def score_matrix(
        self, *, task: str | None = None, labels: tuple[str, ...] | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """(snapshots frame, scores [n_snapshots, n_edges] float32) in one query, rows in the order
        of ``snapshots()``; optionally only snapshots of one ``task`` and of some ``labels``."""
        frame, blobs = self._snapshot_blobs("scores", task, labels)
        matrix = np.empty((len(blobs), self.n_edges), dtype=np.float32)  # [n_snapshots, n_edges]
        for i, (where, n_edges, blob) in enumerate(blobs):
            matrix[i] = schema.unpack_scores(blob, n_edges, where)
        return frame, matrix

    def selected_matrix(
        self, *, task: str | None = None, labels: tuple[str, ...] | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Like ``score_matrix`` but the selection masks: [n_snapshots, n_edges] bool."""
        frame, blobs = self._snapshot_blobs("selected", task, labels)
        matrix = np.empty((len(blobs), self.n_edges), dtype=np.bool_)  # [n_snapshots, n_edges]
        for i, (where, n_edges, blob) in enumerate(blobs):
            matrix[i] = schema.unpack_mask(blob, n_edges, where)
        return frame, matrix

    def head_changes(self) -> pd.DataFrame:
        """step, layer, head (-1 for an MLP), kind (q/k/v/o/mlp), rel_change."""
        rows = self._query(
            "SELECT step, layer, head, kind, rel_change FROM head_changes "
            "ORDER BY step, layer, head = -1, head, "
            "CASE kind WHEN 'q' THEN 0 WHEN 'k' THEN 1 WHEN 'v' THEN 2 WHEN 'o' THEN 3 ELSE 4 END"
        )
        columns = ["step", "layer", "head", "kind", "rel_change"]
        return _ints_where_complete(pd.DataFrame(rows, columns=columns), ("step", "layer", "head"))

    def noise_floor(self) -> pd.DataFrame | None:
        """step, probe, mean_std (mean per-edge std, NaN for the fixed probe); None if never rescored."""
        rows = self._query("SELECT step, probe, n_edges, std FROM noise_floor ORDER BY step, probe")
        if not rows:
            return None
        records = []
        for step, probe, n_edges, std in rows:
            where = self._blob_where(f"noise floor {step}/{probe}", n_edges)
            mean_std = (
                np.nan if std is None else float(schema.unpack_float32(std, n_edges, where).mean())
            )
            records.append((step, probe, mean_std))
        return pd.DataFrame(records, columns=["step", "probe", "mean_std"])

    def noise_floor_scores(self, step: int, probe: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores [n_edges], std [n_edges] or None) of one rescored checkpoint and probe set."""
        rows = self._query(
            "SELECT n_edges, scores, std FROM noise_floor WHERE step = ? AND probe = ?",
            (int(step), probe),
        )
        if not rows:
            raise KeyError(f"run {self.id!r} has no noise floor for step {step}, probe {probe!r}")
        n_edges, scores, std = rows[0]
        where = self._blob_where(f"noise floor {step}/{probe}", n_edges)
        std_arr = None if std is None else schema.unpack_float32(std, n_edges, where)
        return schema.unpack_float32(scores, n_edges, where), std_arr

    def noise_floor_std(self, step: int | None = None) -> np.ndarray | None:
        """Per-edge noise floor [n_edges] float32: the std over resampled probe sets at ``step``, or
        when ``step`` is None the root mean square over every rescored step. None if never rescored."""
        sql = "SELECT step, n_edges, std FROM noise_floor WHERE std IS NOT NULL"
        params: tuple = ()
        if step is not None:
            sql += " AND step = ?"
            params = (int(step),)
        rows = self._query(sql, params)
        if not rows:
            return None
        stds = [
            schema.unpack_float32(std, n, self._blob_where(f"noise floor {s}", n))
            for s, n, std in rows
        ]
        return np.sqrt(np.mean(np.square(np.stack(stds)), axis=0)).astype(np.float32)

    def analyses(self, kind: str | None = None) -> pd.DataFrame:
        """step, kind, key, value of ``circuitviz analyse``'s results (optionally of one kind);
        empty for a run never analysed."""
        columns = ["step", "kind", "key", "value"]
        if not self._query("SELECT name FROM sqlite_master WHERE name = 'analyses'"):
            return pd.DataFrame(columns=columns)
        where, params = ("WHERE kind = ?", (kind,)) if kind is not None else ("", ())
        rows = self._query(
            f"SELECT step, kind, key, value FROM analyses {where} ORDER BY step", params
        )
        return pd.DataFrame(rows, columns=columns)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, safetensors path) of every recorded checkpoint, by step."""
        rows = self._query("SELECT step, path FROM checkpoints ORDER BY step")
        return [(int(step), self.dir / rel) for step, rel in rows]

    def load_checkpoint(self, step: int, device: str = "cpu") -> dict:
        """The tensors saved at ``step`` (a dict name -> torch.Tensor)."""
        paths = dict(self.checkpoints())
        if step not in paths:
            raise KeyError(
                f"run {self.id!r} has no checkpoint at step {step}; it has {sorted(paths)}"
            )
        if not paths[step].is_file():
            raise RunCorrupt(f"{paths[step]}: checkpoint file is missing")
        return ckpt.load_tensors(paths[step], device=device)

    def counts(self) -> dict[str, int]:
        """Rows per table: steps, evals, snapshots, checkpoints, head_changes, noise_floor."""
        tables = ("steps", "evals", "snapshots", "checkpoints", "head_changes", "noise_floor")
        sql = " UNION ALL ".join(f"SELECT count(*) FROM {table}" for table in tables)
        return dict(zip(tables, (int(row[0]) for row in self._query(sql)), strict=True))

    # ---- internals -----------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = schema.connect_read(self.db_path)
        try:
            schema.check_schema(conn, self.db_path)
            yield conn
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RunStoreError(f"{self.db_path}: busy, try again ({exc})") from exc
            raise RunCorrupt(f"{self.db_path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise RunCorrupt(f"{self.db_path}: {exc}") from exc
        finally:
            conn.close()

    def _snapshot_blobs(self, column: str, task: str | None, labels: tuple[str, ...] | None):
        sql = f"SELECT snapshot_id, step, label, task, note, n_edges, {column} FROM snapshots"
        clauses, params = [], []
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        if labels is not None:
            clauses.append(f"label IN ({', '.join('?' * len(labels))})")
            params.extend(labels)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = self._query(f"{sql} ORDER BY {_LABEL_ORDER}", tuple(params))
        frame = pd.DataFrame(
            [row[:5] for row in rows], columns=["snapshot_id", "step", "label", "task", "note"]
        )
        blobs = [(self._blob_where(f"snapshot {row[0]}", row[5]), row[5], row[6]) for row in rows]
        return _ints_where_complete(frame, ("snapshot_id", "step")), blobs

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._connect() as conn:
            return conn.execute(sql, params).fetchall()

    def _blob_where(self, what: str, n_edges: int) -> str:
        if n_edges != self.n_edges:
            raise RunCorrupt(
                f"{self.db_path}: {what} has {n_edges} edges but the run's graph has {self.n_edges}"
            )
        return f"{self.db_path}: {what}"

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r})"


def _frame_with_extras(rows: list[tuple], columns: tuple[str, ...], where: str) -> pd.DataFrame:
    frame = pd.DataFrame([row[:-1] for row in rows], columns=list(columns))
    extras = [schema.load_json(row[-1], where) for row in rows]
    if any(extras):
        extra_frame = pd.DataFrame.from_records(extras, index=frame.index)
        frame = pd.concat([frame, extra_frame], axis=1)
    return frame


def _ints_where_complete(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Integer columns stay int64 when no value is missing, else float64 with NaN (plot-friendly)."""
    for column in columns:
        values = frame[column]
        frame[column] = values.astype("int64") if values.notna().all() else values.astype("float64")
    return frame


__all__ = ["Run", "RunCorrupt", "RunStoreError", "Snapshot"]
