"""Data-parallel circuit-tuning with real torch.distributed workers (gloo, 2 processes on the CPU),
started the way a user starts them (``circuitviz tune --nproc 2``), against one process on the same
global batch: the same losses, circuits and weights to float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitviz.runs import Run
from circuitviz.runs.checkpoints import load_tensors

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each case starts three Python processes that import torch

COMMON = [
    *("--steps", "4", "--every", "1", "--batch-size", "8", "--n-train", "64"),
    *("--n-dev", "16", "--n-probe", "8", "--n-heldout", "8", "--top-n", "30"),
    *("--checkpoint-every", "2", "--no-progress"),
]


def run(*argv: str) -> subprocess.CompletedProcess:
    """``python ARGV...`` with one thread per process, its output captured."""
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, CIRCUITVIZ_THREADS="1"),
        timeout=600,
        check=False,
    )


def tune(tmp_path, run_id: str, *argv: str) -> subprocess.CompletedProcess:
    return run(
        *("-m", "circuitviz", "tune", *argv, "--runs-dir", str(tmp_path), "--run-id", run_id)
    )


def torchrun(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    """``circuitviz tune`` on two processes started by torch's launcher itself."""
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    return run(*launcher, "-m", "circuitviz", "tune", *argv, "--runs-dir", str(tmp_path))


def final_weights(run: Run) -> dict[str, torch.Tensor]:
    _, path = run.checkpoints()[-1]
    return {k: v for k, v in load_tensors(path).items() if k.startswith("param/")}


def assert_same_run(one: Run, two: Run) -> None:
    a, b = one.steps(), two.steps()
    assert list(a["step"]) == list(b["step"]) == [1, 2, 3, 4]
    assert a["loss"].tolist() == pytest.approx(b["loss"].tolist(), rel=1e-5)
    assert a["n_nodes"].tolist() == b["n_nodes"].tolist()  # the same circuit at every step
    frame_a, scores_a = one.score_matrix()  # every snapshot: before, during, after
    frame_b, scores_b = two.score_matrix()
    assert frame_a[["step", "label"]].equals(frame_b[["step", "label"]])
    assert (one.selected_matrix()[1] == two.selected_matrix()[1]).all()
    torch.testing.assert_close(
        torch.from_numpy(scores_b), torch.from_numpy(scores_a), rtol=1e-4, atol=1e-6
    )
    changes_a, changes_b = one.head_changes(), two.head_changes()
    assert len(changes_a) and changes_a[["step", "layer", "head", "kind"]].equals(
        changes_b[["step", "layer", "head", "kind"]]
    )
    assert changes_b["rel_change"].tolist() == pytest.approx(
        changes_a["rel_change"].tolist(), rel=1e-4, abs=1e-7
    )
    wa, wb = final_weights(one), final_weights(two)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-6)
    assert two.status == one.status == "finished"


@pytest.mark.parametrize(
    "method", [("--method", "circuit"), ("--method", "circuit-lora", "--lora-dropout", "0")]
)
def test_two_processes_tune_a_pair_task_like_one(demo_tokenizer_dir, tmp_path, method):
    argv = ["--model", "random:gpt2-tiny", "--task", "sv-disagreement", *COMMON, *method]
    two = tune(tmp_path, "two", *argv, "--nproc", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = tune(tmp_path, "one", *argv)
    assert one.returncode == 0, one.stderr[-3000:]
    assert_same_run(Run(tmp_path / "one"), Run(tmp_path / "two"))


def test_two_processes_tune_an_instruction_task_with_the_global_mean(demo_tokenizer_dir, tmp_path):
    """The mean baseline and the response-token loss are the global batch's, not each shard's."""
    names = ["Mary", "John", "Emma", "Tom", "Lucy", "Peter", "Sarah", "Paul", "Anna", "Ben"]
    places = ["box", "cabinet", "table", "drawer", "bag"]
    rows = [
        {
            "prompt": f"{a} gave a drink to {b} . The key is in the {place} .",
            "response": f"{b} has the drink and the key is in the {place} .",
        }
        for a in names
        for b in names
        for place in places
        if a != b
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--model", "random:gpt2-tiny", "--task", f"sft:{data}", *COMMON]
    two = tune(tmp_path, "two", *argv, "--nproc", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = tune(tmp_path, "one", *argv)
    assert one.returncode == 0, one.stderr[-3000:]
    assert Run(tmp_path / "one").config["attribution"]["baseline"] == "mean"
    assert_same_run(Run(tmp_path / "one"), Run(tmp_path / "two"))


def test_what_cannot_split_exactly_is_refused_before_starting(demo_tokenizer_dir, tmp_path):
    argv = ["--model", "random:gpt2-tiny", "--task", "sv-disagreement", *COMMON, "--nproc", "3"]
    done = tune(tmp_path, "x", *argv)
    assert done.returncode == 2 and "does not divide into 3 processes" in done.stderr
    done = tune(tmp_path, "y", *argv[:-1], "2", "--debias-beta", "0.5")
    assert done.returncode == 2 and "--debias-beta: not exact across processes" in done.stderr
    assert not list(tmp_path.iterdir())
    # Bad input met by every worker: one line from rank 0, the one-process exit code, no traceback.
    argv = ["--model", "random:gpt2-tiny", "--task", f"sft:{tmp_path / 'nope.jsonl'}", *COMMON]
    done = tune(tmp_path, "z", *argv, "--nproc", "2")
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "case",
    [
        ("sv-disagreement", "--optimizer", "adamw", "--lr", "1e-3", "--grad-clip", "0.5"),
        ("arithmetic", "--method", "full", "--grad-checkpointing"),
    ],
    ids=["circuit-adamw-clip", "full-instructions-checkpointing"],
)
def test_fsdp_shards_the_model_and_tunes_like_one_process(demo_tokenizer_dir, tmp_path, case):
    """``--shard fsdp`` on a Llama-family model (grouped-query attention):
    masked AdamW with clipping on split tensors, and full fine-tuning of an instruction task
    whose exact match generates from gathered weights."""
    task, *options = case
    argv = ["--model", "random:llama-tiny", "--task", task, *COMMON, *options]
    two = tune(tmp_path, "two", *argv, "--nproc", "2", "--shard", "fsdp")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Warning" not in two.stderr
    one = tune(tmp_path, "one", *argv)
    assert one.returncode == 0, one.stderr[-3000:]
    assert Run(tmp_path / "two").config["shard"] == "fsdp"
    assert_same_run(Run(tmp_path / "one"), Run(tmp_path / "two"))
    if task == "arithmetic":
        evals = [Run(tmp_path / name).evals() for name in ("one", "two")]
        assert evals[0]["exact_match"].tolist() == evals[1]["exact_match"].tolist()
        assert evals[1]["exact_match"].notna().all()


def test_fsdp_refuses_what_it_cannot_shard_before_creating_a_run(demo_tokenizer_dir, tmp_path):
    argv = ["--model", "random:llama-tiny", "--task", "sv-disagreement", *COMMON]
    done = tune(tmp_path, "a", *argv, "--shard", "fsdp")
    assert done.returncode == 2 and "--shard fsdp splits the model across processes" in done.stderr
    done = tune(tmp_path, "b", *argv, "--shard", "fsdp", "--nproc", "2", "--method", "lora")
    assert done.returncode == 2 and "not LoRA adapters" in done.stderr
    gpt2 = ["--model", "random:gpt2-tiny", *argv[2:]]
    done = tune(tmp_path, "c", *gpt2, "--shard", "fsdp", "--nproc", "2")
    assert done.returncode == 2 and done.stderr.count("error:") == 1
    assert "views of fused weights" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "model, sharding",
    [("random:gpt2-tiny", ()), ("random:llama-tiny", ("--shard", "fsdp"))],
    ids=["data-parallel", "fsdp"],
)
def test_a_data_parallel_run_resumes_from_its_checkpoint(
    demo_tokenizer_dir, tmp_path, model, sharding
):
    """A run that stopped after its step-2 checkpoint (its later checkpoint gone, status failed, as
    a crash leaves it) resumes on two processes and ends as one uninterrupted process does; a
    sharded run reloads whole checkpoints into its split parameters and optimizer state."""
    import sqlite3

    argv = ["--model", model, "--task", "sv-disagreement", *COMMON]  # SGD: a momentum state
    two = tune(tmp_path, "two", *argv, "--nproc", "2", *sharding)
    assert two.returncode == 0, two.stderr[-3000:]
    run_dir = tmp_path / "two"
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        for path, state in db.execute("SELECT path, state_path FROM checkpoints WHERE step > 2"):
            (run_dir / path).unlink()
            (run_dir / state).unlink()
        db.execute("DELETE FROM checkpoints WHERE step > 2")
        db.execute("UPDATE run SET status = 'failed'")
    resumed = run(
        *("-m", "circuitviz", "tune", "--resume", "two", "--nproc", "2"),
        *("--runs-dir", str(tmp_path), "--no-progress"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one = tune(tmp_path, "one", *argv)
    assert one.returncode == 0, one.stderr[-3000:]
    assert [step for step, _ in Run(run_dir).checkpoints()] == [2, 4]
    assert_same_run(Run(tmp_path / "one"), Run(run_dir))


def test_torchrun_refuses_what_cannot_split_before_creating_a_run(demo_tokenizer_dir, tmp_path):
    argv = ["--model", "random:gpt2-tiny", "--task", "sv-disagreement", *COMMON]
    done = torchrun(tmp_path, *argv, "--circuit-forward")
    assert done.returncode != 0 and "--circuit-forward: not exact across processes" in done.stderr
    assert not list(tmp_path.iterdir())


def test_torchrun_starts_one_run_whose_id_rank_0_chose(demo_tokenizer_dir, tmp_path):
    """Started by torch's launcher directly, without --run-id: rank 0 names the run and the other
    rank follows it, so there is one run, finished."""
    done = torchrun(tmp_path, "--model", "random:gpt2-tiny", "--task", "sv-disagreement", *COMMON)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    assert Run(run_dir).status == "finished" and len(Run(run_dir).steps()) == 4


def _worker_pid(run_id: str, rank: int) -> int | None:
    """The pid of the tune worker of ``rank`` in the run ``run_id`` (read from /proc)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if run_id.encode() in argv and f"RANK={rank}".encode() in environ and b"-u" in argv:
            return int(proc.name)
    return None


def test_a_rank_that_dies_fails_the_run_which_resumes(demo_tokenizer_dir, tmp_path):
    """kill -9 of rank 1 mid-run: rank 0 stops with one line saying how to continue, the run is
    kept as failed with its steps, and --resume on two processes finishes it."""
    import signal
    import time

    argv = ["--model", "random:gpt2-tiny", "--task", "sv-disagreement", *COMMON]
    argv[argv.index("--steps") + 1] = "300"
    argv[argv.index("--checkpoint-every") + 1] = "5"
    command = [sys.executable, "-m", "circuitviz", "tune", *argv, "--nproc", "2"]
    command += ["--runs-dir", str(tmp_path), "--run-id", "dies"]
    env = dict(os.environ, CIRCUITVIZ_THREADS="1")
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        db = tmp_path / "dies" / "run.sqlite"
        if db.exists() and len(Run(tmp_path / "dies").steps()) >= 10:
            break
        time.sleep(0.2)
    pid = _worker_pid("dies", 1)
    assert pid is not None and proc.poll() is None, "the run ended before rank 1 could be killed"
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert stderr.count("error:") == 1 and "Traceback" not in stderr, stderr[-3000:]
    # Rank 0 says it when gloo tells it first; the launcher does when it SIGTERMs rank 0 first.
    said = ("another process of this run stopped", "process 1 of this run was ended by SIGKILL")
    assert any(line in stderr for line in said) and "--resume dies --nproc 2" in stderr
    stopped = Run(tmp_path / "dies")
    assert stopped.status == "failed" and 10 <= len(stopped.steps()) < 300
    resumed = run(
        *("-m", "circuitviz", "tune", "--resume", "dies", "--nproc", "2"),
        *("--runs-dir", str(tmp_path), "--no-progress"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = Run(tmp_path / "dies")
    assert done.status == "finished" and list(done.steps()["step"]) == list(range(1, 301))


WORKER = """
import os, signal, sys, time
mode, rank = sys.argv[1], os.environ["RANK"]
if mode == "rank-1-killed" and rank == "1":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "rank-0-killed":
    if rank == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(2)  # rank 1 notices, and stops on its own (silent: only rank 0 speaks)
    sys.exit(2)
if mode == "every-rank-meets-it":  # bad input: rank 0 said it, rank 1 stopped first
    if rank == "1":
        time.sleep(0.5)
        sys.exit(2)
    print("circuitviz tune: error: rank 0's own line", file=sys.stderr, flush=True)
    time.sleep(120)  # the launcher's SIGTERM ends it before its own exit
if mode.startswith("rank-0-says") and rank == "0":  # it noticed first and said why
    print("circuitviz tune: error: rank 0's own line", file=sys.stderr, flush=True)
    if mode == "rank-0-says-then-ends":  # recorded it, then a SIGTERM ended it before its exit
        from circuitviz.runs import RunWriter
        from circuitviz.tuning.launch import LOST_PEER

        writer = RunWriter.resume(sys.argv[2], mark_running=False)
        writer.set_status("failed", LOST_PEER + " (rank 0's own line)")
        writer.close()
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(2)
time.sleep(120)  # rank 0 lives on until the launcher stops it
"""


def _launch_stand_ins(tmp_path, mode: str, status: str | None):
    """Torch's launcher (through ``tuning.launch``) on two stand-in workers; a synthetic run in
    ``status`` (None: no run). Returns (the result, the run's directory, its steps before)."""
    from tests.support.synthetic import write_synthetic_run

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    run_dir = tmp_path / "runs" / "killed"
    n_steps = 0
    if status is not None:
        write_synthetic_run(tmp_path / "runs", run_id="killed", n_steps=20, status=status)
        n_steps = len(Run(run_dir).steps())
    own = [
        "--run-dir",
        str(run_dir),
        "--continue-with",
        "circuitviz tune --resume killed --nproc 2",
    ]
    launcher = ["-m", "circuitviz.tuning.launch", *own, "--standalone", "--nproc-per-node=2"]
    return run(*launcher, str(worker), mode, str(run_dir)), run_dir, n_steps


@pytest.mark.parametrize(
    ("mode", "status", "dead"),
    [
        ("rank-1-killed", "running", 1),  # rank 0 SIGTERMed by the launcher before gloo told it
        ("rank-1-killed", "failed", 1),  # a --resume of a failed run, killed before it restarted
        ("rank-1-killed", None, 1),  # killed before the run was created
        ("rank-0-killed", "running", 0),  # rank 1 noticed, but only rank 0 speaks
    ],
)
def test_a_rank_0_that_ends_without_a_word_gets_one_line_from_the_launcher(
    tmp_path, mode, status, dead
):
    """Torch's launcher with stand-in workers: when rank 0 (the one that speaks) ends by a signal,
    the launcher says which process died of what and how to continue, once, and marks a run still
    recorded as running failed, keeping every step; a run already failed stays as it was; without
    a run the line names only the process."""
    result, run_dir, n_steps = _launch_stand_ins(tmp_path, mode, status)
    stderr = result.stderr
    assert result.returncode == 1
    assert "Traceback" not in stderr and stderr.count("error:") == 1, stderr[-3000:]
    assert f"error: process {dead} of this run was ended by SIGKILL" in stderr
    if status is None:
        assert "kept at" not in stderr and "--resume" not in stderr
        return
    hint = "Continue it with: circuitviz tune --resume killed --nproc 2"
    assert f"kept at {run_dir} as failed" in stderr and hint in stderr
    after = Run(run_dir)
    assert after.status == "failed" and len(after.steps()) == n_steps  # nothing recorded is lost
    if status == "running":
        assert after.status_message == f"process {dead} of this run was ended by SIGKILL"
    else:
        assert after.status_message == "synthetic run"  # its own failure, kept


@pytest.mark.parametrize("mode", ["rank-0-says", "rank-0-says-then-ends", "every-rank-meets-it"])
def test_a_rank_0_that_said_why_is_not_repeated(tmp_path, mode):
    """Rank 0 said why and exited 2; or said and recorded it and was then ended by a signal; or
    every rank met the same bad input, rank 0 said it, and the launcher ended it when another rank
    stopped first: the launcher adds nothing, touches nothing, and exits 2."""
    result, run_dir, _ = _launch_stand_ins(tmp_path, mode, "running")
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and "rank 0's own line" in result.stderr
    expected = "failed" if mode == "rank-0-says-then-ends" else "running"
    assert Run(run_dir).status == expected  # as rank 0 left it


def test_data_parallel_ranks_share_the_backward_as_one_process_does(tmp_path):
    """Instruction data, process metric, EAP: on each of two ranks one backward serves the
    attribution and the update, each example's factor taken against the global batch. The global
    scores and the reduced gradients equal the metric's backward followed by the loss's, and three
    steps take the same losses to the same weights; the ranks hold different numbers of response
    tokens, so a factor taken against a rank's own share would show."""
    from tests.test_tuning_sft import NAMES, PLACES

    rows = []
    for i in range(60):  # responses of four lengths
        name, other, place = NAMES[i % len(NAMES)], NAMES[(i // 2) % len(NAMES)], PLACES[i % 5]
        tail = f" and the key is in the {place}" * (i * 7 % 4)
        rows.append(
            {
                "prompt": f"{name} gave a drink to {other} . The key is in the {place} .",
                "response": f"{other} has the drink{tail} .",
            }
        )
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = f"sft:{tmp_path / 'train.jsonl'}"
    out = tmp_path / "out.pt"
    worker = ROOT / "tests" / "support" / "shared_backward_worker.py"
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    done = subprocess.run(
        [sys.executable, *launcher, str(worker), str(out), str(tmp_path / "runs"), task],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # The bundled demo model (the module's demo_tokenizer_dir points the variable elsewhere).
        env={k: v for k, v in os.environ.items() if k != "CIRCUITVIZ_DEMO_MODEL"}
        | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out)
    counts = [int(c) for c in result["counts"]]
    assert counts[0] != counts[1], counts
    (apart, apart_grads), (shared, shared_grads) = result["apart"], result["shared"]
    assert apart.abs().max() > 0
    torch.testing.assert_close(shared, apart, rtol=1e-4, atol=1e-6 * float(apart.abs().max()))
    reached = 0
    for one, two in zip(shared_grads, apart_grads, strict=True):
        assert (one is None) == (two is None)
        if one is not None:
            reached += 1
            torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-7)
    assert reached > len(shared_grads) // 2
    assert (result["shared_steps_sharing"], result["apart_steps_sharing"]) == (3, 0)
    torch.testing.assert_close(result["shared_losses"], result["apart_losses"], rtol=1e-5, atol=0)
    assert result["shared_losses"][2] < result["shared_losses"][0]
    for name, param in result["shared_params"].items():
        torch.testing.assert_close(param, result["apart_params"][name], rtol=1e-5, atol=1e-7)
