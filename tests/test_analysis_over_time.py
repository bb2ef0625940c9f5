"""``circuitviz analyse`` on a real tuning run: what it stores at each checkpoint equals the same
analysis of the checkpoint loaded on its own (``run:RUN@STEP``), and runs written before analyses
existed take them too."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch

from circuitviz.analysis.dla import direct_logit_attribution
from circuitviz.attribution.faithfulness import (
    DEFAULT_FRACTIONS,
    FaithfulnessConfig,
    evaluate_circuits,
    faithfulness_sweep,
)
from circuitviz.cli import main
from circuitviz.graph.select import top_n
from circuitviz.graph.topology import graph_for
from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tasks import build_task_data
from circuitviz.tuning.storage import config_from_run

ARGS = [
    *("--model", "random:gpt2-tiny", "--task", "sv-disagreement", "--method", "circuit"),
    *("--steps", "6", "--every", "1", "--batch-size", "8", "--n-train", "64", "--n-dev", "16"),
    *("--n-probe", "8", "--n-heldout", "8", "--top-n", "60", "--lr", "0.05"),
    *("--checkpoint-every", "3", "--snapshot-every", "3", "--no-progress"),
]


@pytest.fixture(scope="module")
def analysed(demo_tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["tune", *ARGS, "--runs-dir", str(root), "--run-id", "r"]) == 0
    run_dir = root / "r"
    # A run written before analyses existed has no analyses table: drop it to be one.
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        db.execute("DROP TABLE analyses")
    assert Run(run_dir).analyses().empty
    return root, run_dir


def test_analyse_stores_dla_and_faithfulness_at_every_checkpoint(analysed, capsys):
    root, run_dir = analysed
    argv = ["analyse", "r", "--runs-dir", str(root), "--json", "--no-progress"]
    assert main([*argv, "--budgets", "0.05,0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = Run(run_dir)
    assert summary["steps"] == [0, 3, 6] == [0] + [s for s, _ in run.checkpoints()]
    graph = graph_for(load_model("random:gpt2-tiny").info)
    assert set(summary) >= {"dla", "roles", "attention_to_tagged", "faithfulness_over_time"}
    roles = run.analyses("roles")
    assert len(roles) == 3 * 4 * graph.n_layers * graph.n_heads  # 4 roles, every head, 3 steps
    assert set(summary["roles"]) == {"previous_token", "duplicate_token", "induction", "copying"}
    assert len(run.analyses("attention")) == 3 * graph.n_layers * graph.n_heads
    ov = run.analyses("ov")  # pc1, pc2 at every step; the cosine from the first checkpoint on
    assert len(ov) == (3 * 2 + 2) * graph.n_layers * graph.n_heads
    cos = ov[ov["key"].str.endswith(":cos_unembed")]["value"]
    assert cos.notna().all() and ((cos > 0) & (cos <= 1)).all()
    pc1 = ov[ov["key"] == "a0.h0:pc1"]["value"]
    assert pc1.nunique() == 3  # the head moved: three distinct points
    qk = run.analyses("qk")
    assert len(qk) == 3 * 2 * graph.n_layers * graph.n_heads
    pattern = run.analyses("pattern")
    first = pattern[pattern["step"] == 0]
    n = int(first["key"].str.startswith("token:").sum())
    assert n >= 3 and len(first) == n + graph.n_layers * graph.n_heads * n * (n + 1) // 2
    rows = first[first["key"].str.startswith("a1.h2:")]
    sums = rows.assign(q=rows["key"].str.split(":").str[1]).groupby("q")["value"].sum()
    assert np.allclose(sums.to_numpy(), 1.0)  # each query's weights sum to 1
    assert set(summary["ov_change_toward_answer"]) <= {
        f"a{i}.h{j}" for i in range(2) for j in range(4)
    }
    assert set(summary["faithfulness_over_time"]) == {"0.05", "0.5"}
    dla = run.analyses("dla")
    assert len(dla) == 3 * (graph.n_src + 2)
    assert run.status == "finished"  # analysing leaves the run's own status alone


@pytest.mark.parametrize("step", [3, 6])
def test_stored_dla_equals_the_checkpoint_analysed_on_its_own(analysed, step):
    root, run_dir = analysed
    run = Run(run_dir)
    if run.analyses("dla").empty:
        assert main(["analyse", "r", "--runs-dir", str(root), "--no-progress"]) == 0
        run = Run(run_dir)
    model = load_model(f"run:{run_dir}@{step}", runs_dir=root)
    graph = graph_for(model.info)
    probe = build_task_data(run.task, model.tokenizer, split="dev", n=8, seed=0).batch
    expected = direct_logit_attribution(model, graph, probe).as_dict()
    stored = run.analyses("dla")
    stored = dict(
        zip(stored[stored["step"] == step]["key"], stored[stored["step"] == step]["value"])
    )
    assert max(abs(v) for v in expected.values()) > 1e-4
    for name, value in expected.items():
        assert stored[name] == pytest.approx(value, rel=1e-4, abs=1e-6)
    # And the weights moved: the stored analysis differs from the untouched model's.
    base = run.analyses("dla")
    base = dict(zip(base[base["step"] == 0]["key"], base[base["step"] == 0]["value"]))
    assert any(abs(base[n] - stored[n]) > 1e-6 for n in expected)


def test_stored_faithfulness_equals_the_snapshot_circuit_measured_directly(analysed):
    root, run_dir = analysed
    assert (
        main(
            [
                "analyse",
                "r",
                "--runs-dir",
                str(root),
                "--only",
                "faithfulness",
                "--budgets",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    run = Run(run_dir)
    model = load_model(f"run:{run_dir}@6", runs_dir=root)
    graph = graph_for(model.info)
    frame, matrix = run.score_matrix(task=run.task)
    vector = matrix[[i for i, s in enumerate(frame["step"]) if s <= 6][-1]]
    scores = torch.zeros(graph.n_src, graph.n_dst)
    scores[graph.valid_mask] = torch.from_numpy(np.asarray(vector, dtype=np.float32))
    circuit = top_n(scores, graph, round(0.5 * graph.n_edges))
    probe = build_task_data(run.task, model.tokenizer, split="dev", n=8, seed=0).batch
    config = FaithfulnessConfig.from_attribution(config_from_run(run.config).attribution)
    expected = evaluate_circuits(model, graph, [probe], [circuit], config).faithfulness()[0]
    stored = run.analyses("faithfulness")
    row = stored[(stored["step"] == 6) & (stored["key"] == "own@0.5")]
    assert float(row["value"].iloc[0]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # MIB's CPR and CMD of the same circuit, against the faithfulness sweep computed on its own
    sweep = faithfulness_sweep(
        model, graph, [probe], scores, config, fractions=sorted({*DEFAULT_FRACTIONS, 0.5})
    )
    at6 = dict(zip(stored[stored["step"] == 6]["key"], stored[stored["step"] == 6]["value"]))
    assert at6["cpr:own"] == pytest.approx(sweep.cpr, rel=1e-4, abs=1e-6)
    assert at6["cmd:own"] == pytest.approx(sweep.cmd, rel=1e-4, abs=1e-6)
    assert sweep.cpr > 0 and sweep.cmd >= 0


def test_bad_requests_are_one_line(analysed, capsys):
    root, _ = analysed
    assert main(["analyse", "r", "--runs-dir", str(root), "--only", "heads", "--no-progress"]) == 2
    assert "unknown analyses ['heads']" in capsys.readouterr().err
    assert main(["analyse", "r", "--runs-dir", str(root), "--budgets", "2", "--no-progress"]) == 2
    assert "fractions in (0, 1]" in capsys.readouterr().err
    assert main(["analyse", "nope", "--runs-dir", str(root), "--no-progress"]) == 2


def test_the_summary_names_role_holders_and_migrations(tmp_path):
    """A role moving to another head is a migration; a role no head scores above the floor for is
    held by none (so chance-level attention never reads as a migration)."""
    from circuitviz.analysis.over_time import ROLE_FLOOR, summarise_analyses
    from circuitviz.graph.topology import build_graph
    from circuitviz.runs import RunWriter
    from tests.support.synthetic import write_synthetic_run

    run_id = write_synthetic_run(tmp_path, graph=build_graph(2, 2), n_steps=20)
    writer = RunWriter.resume(tmp_path / run_id)
    for step, holder in ((0, "a0.h0"), (10, "a1.h1")):
        heads = ["a0.h0", "a0.h1", "a1.h0", "a1.h1"]
        values = {f"previous_token:{h}": 0.9 if h == holder else 0.1 for h in heads}
        values |= {f"induction:{h}": ROLE_FLOOR / 2 for h in heads}
        writer.add_analysis(step, "roles", values)
    writer.close()
    roles = summarise_analyses(Run(tmp_path / run_id))["roles"]
    moved = roles["previous_token"]
    assert (moved["holder_first"], moved["holder_last"], moved["migrated"]) == (
        "a0.h0",
        "a1.h1",
        True,
    )
    flat = roles["induction"]
    assert flat["holder_first"] is None and flat["holder_last"] is None and not flat["migrated"]


def test_analyse_leaves_the_runs_status_and_replaces_earlier_rows(analysed, capsys):
    """The run stays "finished" while it is analysed (a killed analysis cannot leave it "running"),
    and a second analysis with other budgets leaves no row of the first."""
    from circuitviz.analysis.over_time import analyse_run

    root, run_dir = analysed
    model = load_model("random:gpt2-tiny", device="cpu")
    seen = []
    analyse_run(
        model,
        Run(run_dir),
        kinds=["faithfulness"],
        budgets=[0.2, 0.4],
        progress=lambda done, total: seen.append(Run(run_dir).status),
    )
    assert seen == ["finished"] * 3
    analyse_run(model, Run(run_dir), kinds=["faithfulness"], budgets=[0.3])
    keys = set(Run(run_dir).analyses("faithfulness")["key"])
    areas = {f"{m}:{c}" for m in ("cpr", "cmd") for c in ("own", "initial")}
    assert keys == {"own@0.3", "initial@0.3", "m_full", "m_empty"} | areas


def test_nothing_is_written_for_a_request_that_cannot_run(analysed, capsys):
    root, run_dir = analysed
    before = Run(run_dir).analyses()
    argv = ["analyse", "r", "--runs-dir", str(root), "--no-progress"]
    assert main([*argv, "--against", "r", "--only", "alignment", "--budgets", "2"]) == 2
    assert "fractions in (0, 1]" in capsys.readouterr().err
    assert main([*argv, "--only", "dla,bias"]) == 2
    assert "gender-pronoun task's" in capsys.readouterr().err
    assert Run(run_dir).analyses().equals(before)
