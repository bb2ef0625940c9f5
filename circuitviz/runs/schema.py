"""The SQLite layout of one run and the low-level helpers both the writer and the reader use.

One database per run directory, ``run.sqlite``, in WAL mode so that one writer and any number of
read-only readers (the dashboard, the CLI, another process) work at once. Tables are deliberately
simple and foreign-key free; every per-step table is keyed by ``step`` so that a resumed run that
replays the steps after its last checkpoint overwrites them (upsert) and ends identical to an
uninterrupted run.

``run.graph_meta`` (holding every edge name) is zlib-compressed JSON. Per-edge vectors are blobs:
snapshot scores as little-endian float16 (``n_edges * 2`` bytes) with the selection mask bit-packed
(``ceil(n_edges / 8)`` bytes, little bit order); noise floors as float32. ``n_edges`` is stored next
to each blob and checked on read, so a truncated blob is reported, never silently reshaped.
"""

from __future__ import annotations

import json
import math
import sqlite3
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np

from circuitviz.runs.errors import RunCorrupt, RunStoreError

SCHEMA_VERSION = 1
DB_NAME = "run.sqlite"
BUSY_TIMEOUT_MS = 10_000
FLOAT16_MAX = float(np.finfo(np.float16).max)

TABLES = (
    "meta",
    "run",
    "steps",
    "evals",
    "snapshots",
    "head_changes",
    "noise_floor",
    "checkpoints",
)

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    model_spec TEXT NOT NULL,
    seed INTEGER NOT NULL,
    sweep_id TEXT,
    config TEXT NOT NULL,
    graph_meta BLOB NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    summary TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE steps (
    step INTEGER PRIMARY KEY,
    loss REAL,
    lr REAL,
    top_n INTEGER,
    n_nodes INTEGER,
    n_edges INTEGER,
    tuned_params_whole INTEGER,
    tuned_params_exact INTEGER,
    tuned_ratio REAL,
    discovered INTEGER NOT NULL,
    time REAL NOT NULL,
    extra TEXT NOT NULL
);
CREATE TABLE evals (
    step INTEGER PRIMARY KEY,
    accuracy REAL,
    task_metric REAL,
    lm_loss REAL,
    time REAL NOT NULL,
    extra TEXT NOT NULL
);
CREATE TABLE snapshots (
    snapshot_id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    label TEXT NOT NULL,
    task TEXT NOT NULL,
    note TEXT NOT NULL,
    n_edges INTEGER NOT NULL,
    scores BLOB NOT NULL,
    selected BLOB NOT NULL,
    time REAL NOT NULL,
    UNIQUE (step, label, task)
);
CREATE TABLE head_changes (
    step INTEGER NOT NULL,
    layer INTEGER NOT NULL,
    head INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rel_change REAL,
    PRIMARY KEY (step, layer, head, kind)
) WITHOUT ROWID;
CREATE TABLE noise_floor (
    step INTEGER NOT NULL,
    probe TEXT NOT NULL,
    n_edges INTEGER NOT NULL,
    scores BLOB NOT NULL,
    std BLOB,
    time REAL NOT NULL,
    PRIMARY KEY (step, probe)
);
CREATE TABLE checkpoints (
    step INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    state_path TEXT NOT NULL,
    n_bytes INTEGER NOT NULL,
    time REAL NOT NULL
);
"""

# Written by ``circuitviz analyse`` after the run, into runs of any age: created when first needed
# (so not among the TABLES every run must have), and read as empty where absent. One number per
# (step, analysis, key): a node's direct logit attribution, a circuit's faithfulness at a budget.
ANALYSES_DDL = """
CREATE TABLE IF NOT EXISTS analyses (
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    time REAL NOT NULL,
    PRIMARY KEY (step, kind, key)
) WITHOUT ROWID;
"""


def db_path(run_dir: Path) -> Path:
    return Path(run_dir) / DB_NAME


def connect_write(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are opened explicitly), WAL journal.

    ``synchronous=NORMAL`` in WAL mode never loses a committed transaction when the *process* dies
    (kill -9): the WAL lives in the OS page cache. Only a power cut may lose the last commits.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        conn.close()
        raise sqlite3.OperationalError(f"could not switch {path} to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def connect_read(path: Path) -> sqlite3.Connection:
    """A read-only connection: the dashboard can never modify a run.

    A WAL database in a directory we cannot write (a bundled, installed demo run) cannot create its
    ``-shm`` file; such runs are finished and checkpointed, so they open as immutable instead.
    """
    if not path.is_file():
        raise RunCorrupt(f"{path}: run database is missing")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.DatabaseError as exc:
        conn.close()
        error = exc
    if "not a database" in str(error) or "malformed" in str(error):
        raise RunCorrupt(f"{path}: not a SQLite database ({error})") from error
    if "locked" in str(error) or "busy" in str(error):
        raise RunStoreError(f"{path}: busy, try again ({error})") from error
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # Opening as immutable would silently skip the rows still in the WAL.
        raise RunStoreError(
            f"{path}: cannot read it ({error}); its write-ahead log {wal.name} holds rows that "
            "need a writable directory to read: make the directory writable or copy the run"
        ) from error
    conn = sqlite3.connect(uri + "&immutable=1", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise RunCorrupt(f"{path}: cannot be opened read-only ({exc})") from exc
    return conn


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Raise RunCorrupt naming the file unless it holds every table at our schema version."""
    try:
        names = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    except sqlite3.DatabaseError as exc:
        raise RunCorrupt(f"{path}: not a SQLite database ({exc})") from exc
    missing = [table for table in TABLES if table not in names]
    if missing:
        raise RunCorrupt(
            f"{path}: missing tables {', '.join(missing)}; this is not a circuitviz run database"
        )
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        raise RunCorrupt(f"{path}: meta table has no schema_version")
    try:
        version = int(row[0])
    except ValueError as exc:
        raise RunCorrupt(f"{path}: schema_version {row[0]!r} is not an integer") from exc
    if version != SCHEMA_VERSION:
        newer = " (written by a newer circuitviz; upgrade it)" if version > SCHEMA_VERSION else ""
        raise RunCorrupt(
            f"{path}: schema version {version}, this circuitviz reads version {SCHEMA_VERSION}{newer}"
        )


def pack_scores(scores: np.ndarray) -> bytes:
    """float16 little-endian; values beyond float16's range are clipped to +-65504 (not inf)."""
    clipped = np.clip(scores.astype(np.float32, copy=False), -FLOAT16_MAX, FLOAT16_MAX)
    return clipped.astype("<f2").tobytes()


def unpack_scores(blob: bytes, n_edges: int, where: str) -> np.ndarray:
    if len(blob) != 2 * n_edges:
        raise RunCorrupt(f"{where}: truncated blob, {len(blob)} bytes for {n_edges} float16 scores")
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def pack_mask(mask: np.ndarray) -> bytes:
    return np.packbits(mask.astype(bool), bitorder="little").tobytes()


def unpack_mask(blob: bytes, n_edges: int, where: str) -> np.ndarray:
    if len(blob) != math.ceil(n_edges / 8):
        raise RunCorrupt(f"{where}: truncated blob, {len(blob)} mask bytes for {n_edges} edges")
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8), bitorder="little")
    return bits[:n_edges].astype(np.bool_)


def pack_float32(values: np.ndarray) -> bytes:
    return values.astype("<f4").tobytes()


def unpack_float32(blob: bytes, n_edges: int, where: str) -> np.ndarray:
    if len(blob) != 4 * n_edges:
        raise RunCorrupt(f"{where}: truncated blob, {len(blob)} bytes for {n_edges} float32 values")
    return np.frombuffer(blob, dtype="<f4").copy()


def load_json(text: str | bytes, where: str):
    """Parse JSON text, or zlib-compressed JSON (``graph_meta``, whose edge names are large)."""
    try:
        if isinstance(text, bytes):
            text = zlib.decompress(text).decode("utf-8")
        return json.loads(text)
    except (TypeError, UnicodeDecodeError, zlib.error, json.JSONDecodeError) as exc:
        raise RunCorrupt(f"{where}: invalid JSON ({exc})") from exc


def dump_json_compressed(value) -> bytes:
    """zlib-compressed JSON: GPT-2 small's 32,491 edge names take 624 kB as text, 76 kB packed."""
    return zlib.compress(dump_json(value).encode("utf-8"), 6)


def dump_json(value) -> str:
    """JSON text; numpy and torch scalars become numbers, arrays lists, paths strings. NaN is kept
    (Python's json reads it back) because a diverged run's loss is worth recording."""
    return json.dumps(value, default=_json_default)


def _json_default(value):
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__} {value!r:.80}")
