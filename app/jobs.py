"""Background jobs the Run page starts: ``circuitviz <command> ...`` processes.

A model never runs inside the page script. Each job is a process of its own session (so Stop can
end it with all its children) writing its output to a log file; a small JSON file beside the log
records what was started, so the page still finds the job after a browser reload. Job files live in
``<runs dir>/.jobs/`` (the run store ignores directories without a ``run.sqlite``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from circuitviz.serving import jobs_allowed  # noqa: F401  (the Run page asks here)
from circuitviz.threads import thread_env

JOBS_DIR = ".jobs"
# The CLI's entry point, run by this interpreter (the venv's), whatever PATH says.
_ENTRY = "import sys; from circuitviz.cli import main; sys.exit(main())"


@dataclass(frozen=True, kw_only=True)
class Job:
    job_id: str  # the run id for tune jobs; the output name for discover and sweep jobs
    kind: str  # "tune" | "sweep" | "discover"
    argv: tuple[str, ...]  # arguments after `circuitviz`
    pid: int
    log: str
    started: str
    total_steps: int | None = None
    output: str | None = None  # discover's JSON output file

    @property
    def log_path(self) -> Path:
        return Path(self.log)


def jobs_dir(root: Path) -> Path:
    return Path(root) / JOBS_DIR


def start_job(
    argv: list[str],
    *,
    root: Path,
    job_id: str,
    kind: str,
    total_steps: int | None = None,
    output: str | None = None,
) -> Job:
    """Start ``circuitviz *argv`` (with this Python) in the background and record it."""
    directory = jobs_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{job_id}.log"
    # Jobs share the machine with each other: each torch process gets its share of the CPUs
    # (two-thread processes fighting over two cores ran 20x slower than one).
    running = sum(1 for other in list_jobs(root) if _alive(other.pid))
    env = thread_env(n_processes=running + 1) | {"PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as handle:
        handle.write(f"$ circuitviz {' '.join(argv)}\n".encode())
        handle.flush()
        process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments from a form
            [sys.executable, "-c", _ENTRY, *argv],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    job = Job(
        job_id=job_id,
        kind=kind,
        argv=tuple(argv),
        pid=process.pid,
        log=str(log),
        started=datetime.now().astimezone().isoformat(timespec="seconds"),
        total_steps=total_steps,
        output=output,
    )
    (directory / f"{job_id}.json").write_text(json.dumps(asdict(job), indent=2))
    return job


def list_jobs(root: Path) -> list[Job]:
    """Jobs recorded under ``root``, newest first; unreadable records are skipped."""
    jobs = []
    for path in sorted(jobs_dir(root).glob("*.json")):
        if path.name.endswith(".rc.json"):
            continue
        try:
            payload = json.loads(path.read_text())
            payload["argv"] = tuple(payload["argv"])
            jobs.append(Job(**payload))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return sorted(jobs, key=lambda job: job.started, reverse=True)


def exit_code(job: Job) -> int | None:
    """None while the job runs; its exit status once it ended (-1 when it ended unobserved,
    e.g. after a server restart)."""
    rc_file = jobs_dir(Path(job.log).parents[1]) / f"{job.job_id}.rc.json"
    if rc_file.is_file():
        try:
            return int(json.loads(rc_file.read_text())["rc"])
        except (OSError, ValueError, KeyError):
            return -1
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)  # reaps our own finished child
    except ChildProcessError:
        pid, status = -1, None  # not our child (another server process started it)
    if pid == 0:
        return None
    if status is not None:
        rc = os.waitstatus_to_exitcode(status)
    elif _alive(job.pid):
        return None
    else:
        rc = -1
    rc_file.write_text(json.dumps({"rc": rc}))
    return rc


def stop_job(job: Job, *, grace_s: float = 3.0) -> None:
    """SIGTERM the job's process group (its own session), then SIGKILL after ``grace_s``."""
    if exit_code(job) is not None:
        return
    try:
        os.killpg(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if exit_code(job) is not None:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)
    exit_code(job)


def log_tail(job: Job, n_lines: int = 25) -> str:
    try:
        with open(job.log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 20000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n_lines:])


def status_word(rc: int | None) -> str:
    if rc is None:
        return "running"
    if rc == 0:
        return "finished"
    return "stopped" if rc < -1 else "failed"  # negative: ended by a signal (Stop)


def plain_failure(job: Job, rc: int) -> str:
    """One sentence saying why a job failed, from the last meaningful line of its log."""
    lines = [line.strip() for line in log_tail(job, 40).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "Error" in line]
    last = (errors or lines or ["(no output)"])[-1]
    if rc < 0 and rc != -1:
        return f"The job was stopped by signal {-rc}."
    return f"The job ended with exit code {rc}: {last}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():  # a zombie is dead for our purposes
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def exists(path: str) -> bool:
    return Path(path).is_file()
