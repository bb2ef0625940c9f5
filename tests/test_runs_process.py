"""The run store across processes: a reader in another process follows a live run, a writer killed
with SIGKILL leaves every committed row, and a resumed run ends where an uninterrupted one ends.

Child processes run functions of this module (``python -c "from test_runs_process import ..."``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from circuitviz.runs import Run, RunStore, RunWriter

TESTS_DIR = Path(__file__).resolve().parent
GPT2_SMALL_EDGES = 32_491


def graph_meta(n_edges: int) -> dict:
    # Made-up edge names: nothing here rebuilds the graph, and this keeps children free of torch.
    return {
        "n_layers": 1,
        "n_heads": 1,
        "n_kv_heads": 1,
        "paper": False,
        "edge_names": [f"e{i}" for i in range(n_edges)],
        "n_model_params": 1000,
    }


def create(root, run_id: str, n_edges: int, seed: int = 0) -> RunWriter:
    return RunWriter.create(
        root,
        run_id,
        config={"n_edges": n_edges},
        model_spec="toy",
        task="sv",
        method="circuit",
        seed=seed,
        graph_meta=graph_meta(n_edges),
    )


def log_plain_step(writer: RunWriter, step: int, loss: float) -> None:
    writer.log_step(
        step,
        loss=loss,
        lr=0.1,
        top_n=3,
        n_nodes=2,
        n_edges=3,
        tuned_params_whole=10,
        tuned_params_exact=5,
        tuned_ratio=0.01,
        discovered=False,
    )


def child(code: str, **kwargs) -> subprocess.Popen:
    script = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); {code}"
    return subprocess.Popen([sys.executable, "-c", script], text=True, **kwargs)


# ---- a reader in another process ----------------------------------------------------------------

READER = (
    "from circuitviz.runs import Run\n"
    "for line in sys.stdin:\n"
    "    run = Run(sys.argv[1])\n"
    "    frame, matrix = run.score_matrix()\n"
    "    print(len(run.steps()), matrix.shape[0], float(matrix[-1, 0]) if len(matrix) else -1,"
    " run.status, flush=True)\n"
)


def test_reader_in_another_process_follows_a_live_run(tmp_path):
    n_edges = 5000
    writer = create(tmp_path, "live", n_edges)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys\n" + READER, str(tmp_path / "live")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = []
    for step in range(15):
        log_plain_step(writer, step, 1.0 / (step + 1))
        writer.add_snapshot(step, "during", "sv", np.full(n_edges, step), np.ones(n_edges, bool))
        proc.stdin.write("read\n")
        proc.stdin.flush()
        seen.append(proc.stdout.readline().split())
    writer.set_status("finished")
    proc.stdin.write("read\n")
    proc.stdin.flush()
    seen.append(proc.stdout.readline().split())
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    writer.close()
    # The reader saw each step as soon as its call returned, while the writer held the run open.
    assert [row[:3] for row in seen[:15]] == [[str(s + 1), str(s + 1), f"{s}.0"] for s in range(15)]
    assert [row[3] for row in seen] == ["running"] * 15 + ["finished"]


# ---- kill -9 -------------------------------------------------------------------------------------


def write_until_killed(root: str, run_id: str, n_edges: int, resume: bool) -> None:
    """Log a step, a snapshot (GPT-2 small size) and a head-change row per step; print each step
    once its calls have returned (committed), forever."""
    if resume:
        writer = RunWriter.resume(root, run_id)
        start = len(Run(Path(root) / run_id).steps())
    else:
        writer, start = create(root, run_id, n_edges), 0
    rng = np.random.default_rng(start)
    step = start
    while True:
        log_plain_step(writer, step, float(step))
        writer.add_snapshot(
            step, "during", "sv", rng.standard_normal(n_edges), rng.random(n_edges) < 0.5
        )
        writer.add_head_changes(step, [{"layer": 0, "head": 0, "kind": "q", "rel_change": step}])
        print(step, flush=True)
        step += 1


def kill_after(tmp_path, n_reported: int, resume: bool) -> list[int]:
    proc = child(
        "from test_runs_process import write_until_killed; "
        f"write_until_killed({str(tmp_path)!r}, 'k', {GPT2_SMALL_EDGES}, {resume})",
        stdout=subprocess.PIPE,
    )
    reported = []
    while len(reported) < n_reported:
        line = proc.stdout.readline()
        assert line, f"writer exited early with {proc.wait()}"
        reported.append(int(line))
    proc.send_signal(signal.SIGKILL)  # the child is still writing: the kill lands mid-loop
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return reported


def check_after_kill(tmp_path, reported: list[int]) -> None:
    db = tmp_path / "k" / "run.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    run = RunStore([tmp_path]).open("k")
    steps = run.steps()["step"].tolist()
    assert set(reported) <= set(steps)
    assert steps == list(range(len(steps)))  # no gaps: a row is either committed whole or absent
    snap_steps = run.snapshots()["step"].tolist()
    assert set(reported) <= set(snap_steps)
    frame, matrix = run.score_matrix()  # every committed blob reads back at full length
    assert matrix.shape == (len(frame), GPT2_SMALL_EDGES)
    assert run.status == "running" and run.is_live() is False
    (summary,) = RunStore([tmp_path]).list_runs()
    assert (summary.status, summary.live, summary.n_steps) == ("running", False, len(steps))


def test_kill_9_keeps_every_committed_step_and_resume_continues(tmp_path):
    first = kill_after(tmp_path, 40, resume=False)
    check_after_kill(tmp_path, first)
    second = kill_after(tmp_path, 25, resume=True)
    assert second[0] >= first[-1] + 1
    check_after_kill(tmp_path, first + second)


# ---- resume ends where an uninterrupted run ends -------------------------------------------------

N_TOY_STEPS = 30
TOY_EDGES = 5


def toy_train(root: str, run_id: str, *, resume: bool = False, kill_at: int | None = None) -> None:
    """A tiny deterministic training loop with the resume protocol the tuning loop follows:
    checkpoint (weights + optimizer + RNG state) every 10 steps; on resume, restore the newest
    checkpoint and replay the steps after it. A run that will be killed logs poisoned losses after
    its last checkpoint, so the test sees that the resumed run rewrote those rows."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    if resume:
        writer = RunWriter.resume(root, run_id)
        last, path, state = writer.latest_checkpoint()
        model.load_state_dict(Run(Path(root) / run_id).load_checkpoint(last))
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        start = last + 1
    else:
        writer, start = create(root, run_id, TOY_EDGES, seed=1), 0
        writer.add_snapshot(0, "before", "sv", _edge_scores(model), _edge_scores(model) > 0)
    for step in range(start, N_TOY_STEPS):
        x = torch.randn(8, 4, generator=generator, dtype=torch.float64)  # [batch, d_in]
        loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        poison = 1000.0 if kill_at is not None and step > 19 else 0.0
        log_plain_step(writer, step, loss.item() + poison)
        if step % 5 == 4:
            writer.log_eval(step, accuracy=0.5 + poison, task_metric=loss.item(), lm_loss=3.0)
            scores = _edge_scores(model) + poison
            writer.add_snapshot(step, "during", "sv", scores, scores > 0)
        if step % 10 == 9:
            state = {"optimizer": optimizer.state_dict(), "rng": generator.get_state()}
            writer.save_checkpoint(step, dict(model.state_dict()), state)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    writer.add_snapshot(N_TOY_STEPS, "after", "sv", _edge_scores(model), _edge_scores(model) > 0)
    writer.set_summary({"final_loss": loss.item()})
    writer.set_status("finished")
    writer.close()


def _edge_scores(model) -> np.ndarray:
    return torch.cat([model.weight.flatten(), model.bias]).detach().numpy()  # [TOY_EDGES]


def comparable_tables(run: Run) -> dict[str, pd.DataFrame]:
    frame, matrix = run.score_matrix()
    return {
        "steps": run.steps().drop(columns="time"),
        "evals": run.evals().drop(columns="time"),
        "snapshots": frame,
        "scores": pd.DataFrame(matrix),
        "masks": pd.DataFrame([run.snapshot(i).selected for i in frame["snapshot_id"]]),
        "checkpoints": pd.DataFrame([step for step, _ in run.checkpoints()]),
    }


def test_resumed_run_ends_where_an_uninterrupted_run_ends(tmp_path):
    toy_train(str(tmp_path), "whole")
    proc = child(
        f"from test_runs_process import toy_train; toy_train({str(tmp_path)!r}, 'cut', kill_at=24)"
    )
    assert proc.wait(timeout=120) == -signal.SIGKILL
    cut = Run(tmp_path / "cut")
    assert cut.status == "running" and cut.steps()["loss"].max() > 1000  # poisoned rows 20-24
    assert cut.steps()["step"].max() == 24
    toy_train(str(tmp_path), "cut", resume=True)
    whole, resumed = Run(tmp_path / "whole"), Run(tmp_path / "cut")
    for name, table in comparable_tables(whole).items():
        pd.testing.assert_frame_equal(comparable_tables(resumed)[name], table, obj=name)
    assert (resumed.status, resumed.summary) == (whole.status, whole.summary)
    for step, _ in whole.checkpoints():
        for key, tensor in whole.load_checkpoint(step).items():
            assert torch.equal(resumed.load_checkpoint(step)[key], tensor)
