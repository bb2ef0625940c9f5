"""How many CPU threads a torch process of circuitviz uses.

Several torch processes with the default thread count on a small machine fight: OpenMP worker
threads spin while they wait, and two 2-thread processes on 2 cores were measured 20x slower than
one. So every process circuitviz starts is told how many threads it may use, before torch loads:
the CPUs this process may run on divided by the processes that will share them, unless the user
already set ``OMP_NUM_THREADS`` (or ``CIRCUITVIZ_THREADS``, which wins). Imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
OVERRIDE = "CIRCUITVIZ_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(n_processes: int = 1, environ: Mapping[str, str] | None = None) -> int:
    """Threads each of ``n_processes`` torch processes should use."""
    environ = os.environ if environ is None else environ
    for name in (OVERRIDE, "OMP_NUM_THREADS"):
        count = _count(name, environ.get(name))
        if isinstance(count, int):
            return count
    return max(1, available_cpus() // max(1, n_processes))


def _count(name: str, value: str | None) -> int | str | None:
    """The thread count ``value`` of variable ``name`` sets; None when unset or empty; the value
    itself when it is not a count. OpenMP also takes a list for nested levels ("4,2"): the first
    is this process's."""
    if value is None or not value.strip():
        return None
    first = value.split(",")[0] if name == "OMP_NUM_THREADS" else value
    first = first.strip()
    return int(first) if first.isdecimal() and int(first) > 0 else value


def thread_env_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with the thread variable that decides (``threads_for``'s order: a count
    that is not a whole number >= 1), or None. ``threads_for`` passes over such a value; a command
    says so instead."""
    environ = os.environ if environ is None else environ
    for name in (OVERRIDE, "OMP_NUM_THREADS"):
        count = _count(name, environ.get(name))
        if isinstance(count, int):
            return None  # this one decides; a later one is not read
        if count is not None:
            return (
                f"{name}={count!r} is not a thread count: set it to a whole number >= 1 (threads "
                "per process), or unset it"
            )
    return None


def thread_env(n_processes: int = 1, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` with every thread variable set for one of ``n_processes`` processes."""
    environ = dict(os.environ if environ is None else environ)
    n = str(threads_for(n_processes, environ))
    return environ | dict.fromkeys((*THREAD_VARS, OVERRIDE), n)


def limit_this_process(n_threads: int | None = None) -> int:
    """Set the thread variables of this process (before torch is imported, so its thread pools
    start at that size; if torch is already loaded, resize it too). Returns the thread count."""
    n = n_threads if n_threads is not None else threads_for(1)
    os.environ.update(dict.fromkeys(THREAD_VARS, str(n)))
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
