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
