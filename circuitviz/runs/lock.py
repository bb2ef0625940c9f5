"""One writer per run: an advisory ``flock`` on ``run.lock`` held while a RunWriter is open.

The kernel drops the lock when the process dies (even by kill -9), so the lock also tells a reader
whether a run whose status says "running" still has a live writer. Where ``fcntl`` does not exist
(Windows) locking is skipped and liveness is unknown.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = "run.lock"


def acquire_writer_lock(run_dir: Path, wait_s: float = 2.0) -> int | None:
    """Return an fd holding an exclusive lock, or None where locking is unsupported. Raises
    BlockingIOError when another live process holds it after ``wait_s`` seconds (a reader probing
    liveness holds a shared lock for microseconds, hence the short retry)."""
    if fcntl is None:
        return None
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise
            time.sleep(0.05)


def release_writer_lock(fd: int | None) -> None:
    if fd is None:
        return
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def writer_alive(run_dir: Path) -> bool | None:
    """True when a process holds the run's writer lock, False when none does, None if unknown."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the fd also releases a lock we did get
    return False
