"""Thread counts for the torch processes circuitviz starts."""

from __future__ import annotations

import subprocess
import sys

from circuitviz.threads import available_cpus, thread_env, threads_for


def test_processes_share_the_cpus_unless_the_user_said_otherwise():
    cpus = available_cpus()
    assert threads_for(1, {}) == cpus
    assert threads_for(cpus * 4, {}) == 1  # never zero
    assert threads_for(2, {"OMP_NUM_THREADS": "3"}) == 3
    assert threads_for(1, {"OMP_NUM_THREADS": "3", "CIRCUITVIZ_THREADS": "2"}) == 2
    assert threads_for(1, {"OMP_NUM_THREADS": "junk"}) == cpus
    env = thread_env(2, {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, cpus // 2))


def test_the_cli_runs_torch_with_the_threads_it_was_given():
    code = (
        "import sys; from circuitviz.cli import main; "
        "main(['--threads', '1', 'graph', '--model', 'random:gpt2-tiny', '--json']); "
        "import torch; print('threads', torch.get_num_threads())"
    )
    env = thread_env(1, {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"})
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("threads 1")


def test_jobs_the_dashboard_starts_get_their_share_of_the_cpus(tmp_path, monkeypatch):
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
    import jobs

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CIRCUITVIZ_THREADS"):
        monkeypatch.delenv(name, raising=False)  # no user choice: the dashboard decides
    argv = ["tune", "--model", "demo", "--task", "sv-disagreement", "--steps", "100000"]
    argv += ["--runs-dir", str(tmp_path), "--no-progress"]
    first = jobs.start_job(argv, root=tmp_path, job_id="first", kind="tune")
    second = jobs.start_job(argv, root=tmp_path, job_id="second", kind="tune")
    try:
        time.sleep(0.5)
        environ = {}
        for job in (first, second):
            raw = Path(f"/proc/{job.pid}/environ").read_bytes().split(b"\0")
            environ[job.job_id] = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        cpus = available_cpus()
        assert environ["first"]["OMP_NUM_THREADS"] == environ["first"]["MKL_NUM_THREADS"]
        assert environ["first"]["OMP_NUM_THREADS"] == str(cpus)  # alone on the machine
        assert environ["second"]["OMP_NUM_THREADS"] == str(max(1, cpus // 2))  # shares it
    finally:
        for job in (first, second):
            jobs.stop_job(job)


def test_a_thread_count_that_is_not_one_is_refused_by_the_cli(monkeypatch, capsys):
    """CIRCUITVIZ_THREADS=abc or OMP_NUM_THREADS=nan was passed over in silence; --threads, given
    on the command line, takes the place of both."""
    from circuitviz.cli import main
    from circuitviz.threads import thread_env_problem

    assert thread_env_problem({}) is None
    assert thread_env_problem({"OMP_NUM_THREADS": "4,2", "CIRCUITVIZ_THREADS": " 3"}) is None
    # An empty variable is unset; OpenMP's nested list is read as its first level; the variable
    # that decides is the only one checked.
    assert thread_env_problem({"OMP_NUM_THREADS": "", "CIRCUITVIZ_THREADS": " "}) is None
    assert threads_for(1, {"OMP_NUM_THREADS": "4,2"}) == 4
    assert thread_env_problem({"OMP_NUM_THREADS": "nan", "CIRCUITVIZ_THREADS": "2"}) is None
    assert "'²' is not a thread count" in thread_env_problem({"CIRCUITVIZ_THREADS": "²"})
    assert (
        thread_env(1, {"CIRCUITVIZ_THREADS": "abc", "OMP_NUM_THREADS": "2"})["CIRCUITVIZ_THREADS"]
        == "2"
    )  # what the dashboard's jobs get: a count, whatever the parent had
    for name, value in (
        ("CIRCUITVIZ_THREADS", "abc"),
        ("CIRCUITVIZ_THREADS", "-2"),
        ("OMP_NUM_THREADS", "nan"),
    ):
        monkeypatch.setenv(name, value)
        assert main(["runs", "list", "--runs-dir", "nowhere"]) == 2
        err = capsys.readouterr().err
        assert f"{name}={value!r} is not a thread count" in err and len(err.splitlines()) == 1
        assert main(["--threads", "1", "runs", "list", "--runs-dir", "nowhere"]) == 0
        capsys.readouterr()
        monkeypatch.delenv(name)
