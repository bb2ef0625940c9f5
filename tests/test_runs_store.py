"""The run store in one process: every table round-trips, bad input fails clearly, nothing recorded
is lost. Real SQLite files under tmp_path; no mocks."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
import torch
from support.synthetic import write_synthetic_run

from circuitviz.graph.topology import build_graph
from circuitviz.runs import Run, RunCorrupt, RunNotFound, RunStore, RunStoreError, RunWriter
from circuitviz.runs.schema import FLOAT16_MAX, connect_read

GRAPH = build_graph(2, 4)  # 110 valid edges: not a multiple of 8, so the mask's padding is tested


def graph_meta(graph=GRAPH) -> dict:
    return {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "n_kv_heads": graph.n_kv_heads,
        "paper": graph.paper,
        "edge_names": graph.edge_names(),
        "n_model_params": 123_456,
    }


def create(root, run_id="r1", **overrides) -> RunWriter:
    args = dict(
        config={"lr": 1e-3, "top_n": 10, "nested": {"a": [1, 2]}},
        model_spec="random:gpt2-tiny",
        task="sv",
        method="circuit",
        seed=7,
        graph_meta=graph_meta(),
    )
    args.update(overrides)
    return RunWriter.create(root, run_id, **args)


def step_fields(step: int, **overrides) -> dict:
    values = dict(
        loss=1.0 / (step + 1),
        lr=1e-3,
        top_n=10,
        n_nodes=5,
        n_edges=10,
        tuned_params_whole=1000 + step,
        tuned_params_exact=400,
        tuned_ratio=0.01,
        discovered=step % 2 == 0,
    )
    values.update(overrides)
    return values


def test_run_fields_round_trip(tmp_path):
    with create(tmp_path, sweep_id="sw1") as writer:
        writer.set_summary({"base_lm_loss": 3.5})
        writer.set_summary({"final_accuracy": 0.9, "base_lm_loss": 3.25})
        writer.set_status("finished", "done")
    run = RunStore([tmp_path]).open("r1")
    assert (run.id, run.kind, run.task, run.method, run.seed) == ("r1", "tune", "sv", "circuit", 7)
    assert run.model_spec == "random:gpt2-tiny" and run.sweep_id == "sw1"
    assert run.config == {"lr": 1e-3, "top_n": 10, "nested": {"a": [1, 2]}}
    assert (run.status, run.status_message) == ("finished", "done")
    assert run.summary == {"base_lm_loss": 3.25, "final_accuracy": 0.9}  # merged, later wins
    assert {"python", "torch", "transformer_lens", "circuitviz"} <= set(run.versions)
    assert run.versions["torch"].startswith(torch.__version__.split("+")[0])
    assert run.edge_names() == GRAPH.edge_names()
    assert torch.equal(run.graph().valid_mask, GRAPH.valid_mask)


def test_steps_and_evals_round_trip(tmp_path):
    with create(tmp_path) as writer:
        for step in range(5):
            writer.log_step(step, **step_fields(step, top_n=None if step == 3 else 10), gnorm=step)
        writer.log_eval(0, accuracy=0.5, task_metric=0.1, lm_loss=3.0)
        writer.log_eval(4, accuracy=0.75, task_metric=1.5, lm_loss=3.1, n_dev=64)
    run = Run(tmp_path / "r1")
    steps = run.steps()
    assert steps["step"].tolist() == [0, 1, 2, 3, 4]
    assert steps["loss"].tolist() == pytest.approx([1.0 / (s + 1) for s in range(5)])
    assert steps["tuned_params_whole"].tolist() == [1000, 1001, 1002, 1003, 1004]
    assert steps["discovered"].tolist() == [True, False, True, False, True]
    assert steps["discovered"].dtype == bool
    assert np.isnan(steps["top_n"][3]) and steps["top_n"][0] == 10  # missing top_n is NaN
    assert steps["gnorm"].tolist() == [0, 1, 2, 3, 4]
    evals = run.evals()
    assert evals["step"].tolist() == [0, 4]
    assert evals["accuracy"].tolist() == [0.5, 0.75]
    assert evals["lm_loss"].tolist() == [3.0, 3.1]
    assert np.isnan(evals["n_dev"][0]) and evals["n_dev"][1] == 64


def test_empty_run_has_typed_empty_tables(tmp_path):
    create(tmp_path).close()
    run = Run(tmp_path / "r1")
    assert len(run.steps()) == 0 and "tuned_ratio" in run.steps().columns
    assert len(run.evals()) == 0 and len(run.snapshots()) == 0
    assert run.score_matrix()[1].shape == (0, GRAPH.n_edges)
    assert run.noise_floor() is None and run.noise_floor_std() is None
    assert run.checkpoints() == []


def test_snapshots_round_trip_float16_and_exact_mask(tmp_path):
    rng = np.random.default_rng(0)
    n_edges = GRAPH.n_edges
    scores = {
        label: rng.standard_normal(n_edges) * 10.0 ** rng.integers(-4, 2, n_edges)
        for label in ("b", "d", "a")
    }
    masks = {label: rng.random(n_edges) < 0.3 for label in scores}
    with create(tmp_path) as writer:
        # Written out of order: the reader orders before, during by step, after.
        id_after = writer.add_snapshot(30, "after", "sv", scores["a"], masks["a"], note="final")
        id_during = writer.add_snapshot(
            10, "during", "sv", torch.tensor(scores["d"]), torch.tensor(masks["d"])
        )
        id_before = writer.add_snapshot(0, "before", "agreement", scores["b"], masks["b"])
    run = Run(tmp_path / "r1")
    frame = run.snapshots()
    assert frame["snapshot_id"].tolist() == [id_before, id_during, id_after]
    assert frame["label"].tolist() == ["before", "during", "after"]
    assert frame["task"].tolist() == ["agreement", "sv", "sv"]
    for sid, key in ((id_before, "b"), (id_during, "d"), (id_after, "a")):
        snap = run.snapshot(sid)
        assert snap.scores.dtype == np.float32 and snap.scores.shape == (n_edges,)
        np.testing.assert_allclose(snap.scores, scores[key], rtol=2**-11, atol=2**-24)
        assert snap.selected.dtype == np.bool_
        np.testing.assert_array_equal(snap.selected, masks[key])
    assert run.snapshot(id_after).note == "final"
    frame2, matrix = run.score_matrix()
    assert frame2["snapshot_id"].tolist() == frame["snapshot_id"].tolist()
    np.testing.assert_array_equal(matrix[1], run.snapshot(id_during).scores)
    _, selected = run.selected_matrix()
    np.testing.assert_array_equal(selected, np.stack([masks["b"], masks["d"], masks["a"]]))
    sv_frame, sv_matrix = run.score_matrix(task="sv", labels=("after",))
    assert sv_frame["snapshot_id"].tolist() == [id_after] and sv_matrix.shape == (1, n_edges)


def test_snapshot_upsert_keeps_id_and_clips_beyond_float16(tmp_path):
    n_edges = GRAPH.n_edges
    with create(tmp_path) as writer:
        first = writer.add_snapshot(5, "during", "sv", np.zeros(n_edges), np.zeros(n_edges, bool))
        big = np.full(n_edges, 1e6)
        big[0] = -1e9
        again = writer.add_snapshot(5, "during", "sv", big, np.ones(n_edges, bool))
    assert first == again
    snap = Run(tmp_path / "r1").snapshot(first)
    assert snap.scores[1] == FLOAT16_MAX and snap.scores[0] == -FLOAT16_MAX
    assert snap.selected.all()


def test_head_changes_noise_floor_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n_edges = GRAPH.n_edges
    fixed = rng.standard_normal(n_edges).astype(np.float32)
    std10, std20 = (rng.random(n_edges).astype(np.float32) for _ in range(2))
    with create(tmp_path) as writer:
        writer.add_head_changes(
            10,
            [
                {"layer": 0, "head": 1, "kind": "v", "rel_change": 0.5},
                {"layer": 0, "head": 1, "kind": "q", "rel_change": 0.25},
                {"layer": 1, "head": None, "kind": "mlp", "rel_change": 0.125},
            ],
        )
        writer.add_noise_floor(10, "fixed", fixed)
        writer.add_noise_floor(10, "resample-8", fixed + 1, std10)
        writer.add_noise_floor(20, "resample-8", fixed, torch.tensor(std20))
    run = Run(tmp_path / "r1")
    changes = run.head_changes()
    assert changes[["layer", "head", "kind"]].values.tolist() == [
        [0, 1, "q"],
        [0, 1, "v"],
        [1, -1, "mlp"],
    ]
    assert changes["rel_change"].tolist() == [0.25, 0.5, 0.125]
    floor = run.noise_floor()
    assert floor[["step", "probe"]].values.tolist() == [
        [10, "fixed"],
        [10, "resample-8"],
        [20, "resample-8"],
    ]
    assert np.isnan(floor["mean_std"][0]) and floor["mean_std"][1] == pytest.approx(std10.mean())
    scores, std = run.noise_floor_scores(10, "resample-8")
    np.testing.assert_array_equal(scores, fixed + 1)
    np.testing.assert_array_equal(std, std10)
    assert run.noise_floor_scores(10, "fixed")[1] is None
    np.testing.assert_array_equal(run.noise_floor_std(20), std20)
    np.testing.assert_allclose(run.noise_floor_std(), np.sqrt((std10**2 + std20**2) / 2), rtol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    weight = torch.randn(6, 4)
    shared = weight[:3]  # shares storage with weight, as GPT-2's q/k/v views of c_attn do
    generator = torch.Generator().manual_seed(3)
    state = {"step": 20, "rng": generator.get_state(), "optimizer": {"state": {}, "lr": [0.1, 0.2]}}
    with create(tmp_path) as writer:
        assert writer.latest_checkpoint() is None
        writer.save_checkpoint(10, {"w": weight * 0, "w_top": shared * 0}, {"step": 10})
        path = writer.save_checkpoint(20, {"w": weight, "w_top": shared}, state)
        step, latest_path, loaded = writer.latest_checkpoint()
    assert (step, latest_path) == (20, path) and path.name == "step-000020.safetensors"
    assert torch.equal(loaded["rng"], state["rng"]) and loaded["optimizer"] == state["optimizer"]
    run = Run(tmp_path / "r1")
    assert run.checkpoints() == [(10, path.with_name("step-000010.safetensors")), (20, path)]
    tensors = run.load_checkpoint(20)
    assert torch.equal(tensors["w"], weight) and torch.equal(tensors["w_top"], shared)
    assert not list(path.parent.glob(".*tmp*"))  # no temporary files left behind
    half_written = path.parent / ".step-000030.safetensors.tmp-99999"  # as a killed writer leaves
    half_written.write_bytes(b"partial")
    RunWriter.resume(tmp_path, "r1").close()
    assert not half_written.exists() and path.is_file()


def test_resume_state_that_cannot_load_safely_fails_at_save(tmp_path):
    with create(tmp_path) as writer, pytest.raises(ValueError, match=r"resume_state\['np_rng'\]"):
        writer.save_checkpoint(1, {"w": torch.zeros(2)}, {"np_rng": np.random.get_state()})
    assert Run(tmp_path / "r1").checkpoints() == []


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        create(tmp_path, kind="train")
    with pytest.raises(ValueError, match="graph_meta lacks"):
        create(tmp_path, graph_meta={"n_layers": 2})
    with pytest.raises(ValueError, match="run_id must be"):
        create(tmp_path, run_id="../escape")
    assert list(tmp_path.iterdir()) == []  # nothing was created
    n_edges = GRAPH.n_edges
    with create(tmp_path) as writer:
        with pytest.raises(ValueError, match=r"scores must have shape \(110,\)"):
            writer.add_snapshot(
                0, "before", "sv", np.zeros(n_edges - 1), np.zeros(n_edges - 1, bool)
            )
        with pytest.raises(ValueError, match="selected must be boolean"):
            writer.add_snapshot(0, "before", "sv", np.zeros(n_edges), np.zeros(n_edges))
        with pytest.raises(ValueError, match="label must be one of"):
            writer.add_snapshot(0, "middle", "sv", np.zeros(n_edges), np.zeros(n_edges, bool))
        with pytest.raises(ValueError, match="clash with fixed columns"):
            writer.log_step(0, **step_fields(0), time=3)
        with pytest.raises(ValueError, match="step must be a non-negative integer"):
            writer.log_step(-1, **step_fields(0))
        with pytest.raises(ValueError, match="status must be one of"):
            writer.set_status("done")
        with pytest.raises(ValueError, match="probe must be"):
            writer.add_noise_floor(0, "random", np.zeros(n_edges))
        with pytest.raises(ValueError, match=r"rows\[0\]\['kind'\]"):
            writer.add_head_changes(0, [{"layer": 0, "head": 0, "kind": "x", "rel_change": 0}])
    run = Run(tmp_path / "r1")
    assert len(run.snapshots()) == 0 and len(run.steps()) == 0 and len(run.head_changes()) == 0


def test_writer_exceptions_mark_run_failed_and_closed_writer_refuses(tmp_path):
    with pytest.raises(RuntimeError), create(tmp_path) as writer:
        writer.log_step(0, **step_fields(0))
        raise RuntimeError("diverged")
    run = Run(tmp_path / "r1")
    assert (run.status, run.status_message) == ("failed", "RuntimeError: diverged")
    assert len(run.steps()) == 1
    with pytest.raises(RunStoreError, match="closed"):
        writer.log_step(1, **step_fields(1))


def test_unwritable_root_fails_before_anything_is_written(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    with pytest.raises(RunStoreError, match="cannot create runs directory .*not-a-dir/runs"):
        create(blocker / "runs")
    with pytest.raises(RunStoreError, match="is a file, not a directory"):
        create(blocker)
    assert blocker.read_text() == "a file"


def test_existing_run_is_never_overwritten(tmp_path):
    with create(tmp_path) as writer:
        writer.log_step(0, **step_fields(0))
    with pytest.raises(RunStoreError, match="already exists.*--resume r1"):
        create(tmp_path, task="other")
    run = Run(tmp_path / "r1")
    assert run.task == "sv" and len(run.steps()) == 1


def test_second_writer_on_a_live_run_is_refused(tmp_path):
    writer = create(tmp_path)
    with pytest.raises(RunStoreError, match="being written by another process"):
        RunWriter.resume(tmp_path, "r1")
    assert Run(tmp_path / "r1").is_live() is True
    writer.close()
    assert Run(tmp_path / "r1").is_live() is False
    RunWriter.resume(tmp_path, "r1").close()


def test_resume_of_missing_run_lists_known_ids(tmp_path):
    create(tmp_path, run_id="known").close()
    with pytest.raises(RunNotFound, match="no run 'ghost'.*known runs: known"):
        RunWriter.resume(tmp_path, "ghost")


def test_run_not_found_messages(tmp_path):
    empty = RunStore([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(RunNotFound, match=r"no runs exist under .*/a, .*/b"):
        empty.open("x")
    create(tmp_path / "a", run_id="one").close()
    create(tmp_path / "b", run_id="two").close()
    with pytest.raises(RunNotFound, match="known runs: one, two"):
        empty.open("x")
    assert empty.open("two").dir == tmp_path / "b" / "two"
    assert empty.open(str(tmp_path / "b" / "two")).id == "two"  # a run directory works too


def corrupt_runs(tmp_path) -> dict[str, str]:
    """Make one run per kind of damage; return run id -> expected message pattern."""
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "run.sqlite").write_bytes(b"this is not a database " * 100)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.sqlite").write_bytes(b"")
    (tmp_path / "other").mkdir()
    conn = sqlite3.connect(tmp_path / "other" / "run.sqlite")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.commit()
    conn.close()
    create(tmp_path, run_id="future").close()
    conn = sqlite3.connect(tmp_path / "future" / "run.sqlite")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    return {
        "garbage": r"garbage/run.sqlite: not a SQLite database",
        "empty": r"empty/run.sqlite: missing tables meta, run, steps",
        "other": r"other/run.sqlite: missing tables run, steps",
        "future": r"future/run.sqlite: schema version 99, this circuitviz reads version 1 "
        r"\(written by a newer circuitviz",
    }


def test_corrupt_runs_name_file_and_problem(tmp_path):
    for run_id, pattern in corrupt_runs(tmp_path).items():
        with pytest.raises(RunCorrupt, match=pattern):
            RunStore([tmp_path]).open(run_id)


def test_truncated_blob_is_reported_not_reshaped(tmp_path):
    n_edges = GRAPH.n_edges
    with create(tmp_path) as writer:
        sid = writer.add_snapshot(0, "before", "sv", np.ones(n_edges), np.ones(n_edges, bool))
    conn = sqlite3.connect(tmp_path / "r1" / "run.sqlite")
    conn.execute("UPDATE snapshots SET scores = substr(scores, 1, 100)")
    conn.commit()
    conn.close()
    run = Run(tmp_path / "r1")
    assert run.snapshots()["snapshot_id"].tolist() == [sid]  # the listing still works
    with pytest.raises(RunCorrupt, match=r"r1/run.sqlite: snapshot 1: truncated blob, 100 bytes"):
        run.snapshot(sid)
    with pytest.raises(RunCorrupt, match="truncated blob"):
        run.score_matrix()


def test_missing_database_is_corrupt(tmp_path):
    (tmp_path / "r9").mkdir()
    with pytest.raises(RunCorrupt, match="r9/run.sqlite: run database is missing"):
        Run(tmp_path / "r9")


def test_list_runs_survives_corrupt_runs(tmp_path):
    patterns = corrupt_runs(tmp_path)
    good = write_synthetic_run(tmp_path, n_steps=30, snapshot_every=10, eval_every=10)
    (tmp_path / "not-a-run").mkdir()  # a directory without run.sqlite is ignored
    summaries = {s.id: s for s in RunStore([tmp_path, tmp_path / "missing-root"]).list_runs()}
    assert set(summaries) == {good, *patterns}
    assert summaries[good].status == "finished" and summaries[good].n_steps == 30
    assert (summaries[good].task, summaries[good].kind, summaries[good].live) == (
        "sv",
        "tune",
        False,
    )
    for run_id, pattern in patterns.items():
        assert summaries[run_id].status == "corrupt"
        assert re.search(pattern, summaries[run_id].message), summaries[run_id].message


def test_reader_cannot_write(tmp_path):
    create(tmp_path).close()
    conn = connect_read(tmp_path / "r1" / "run.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM run")
    conn.close()
    assert Run(tmp_path / "r1").id == "r1"


def test_reader_snapshot_does_not_block_writer(tmp_path):
    writer = create(tmp_path)
    writer.log_step(0, **step_fields(0))
    conn = connect_read(tmp_path / "r1" / "run.sqlite")
    conn.execute("BEGIN")
    assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 1
    writer.log_step(1, **step_fields(1))  # commits while the reader holds its read transaction
    assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 1  # consistent snapshot
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 2
    conn.close()
    writer.close()


def test_default_store_uses_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(tmp_path / "mine"))
    store = RunStore.default()
    assert store.roots[0] == tmp_path / "mine" and store.roots[1].name == "demo-runs"
    assert RunStore.default(tmp_path / "cli").roots[0] == tmp_path / "cli"


def test_synthetic_run_is_complete_and_drifts_smoothly(tmp_path):
    run_id = write_synthetic_run(
        tmp_path, n_steps=200, seed=3, checkpoint_every=100, noise_floor=True
    )
    run = RunStore([tmp_path]).open(run_id)
    assert run.status == "finished" and run_id.startswith("sv-circuit-")
    assert run.counts() == {
        "steps": 200,
        "evals": 11,
        "snapshots": 5,
        "checkpoints": 2,
        "head_changes": 4 * (2 * 4 * 4 + 2),
        "noise_floor": 6,
    }
    frame, matrix = run.score_matrix()
    assert frame["label"].tolist() == ["before", "during", "during", "during", "after"]
    assert frame["step"].tolist() == [0, 50, 100, 150, 200]
    neighbours = [np.corrcoef(matrix[i], matrix[i + 1])[0, 1] for i in range(4)]
    assert min(neighbours) > np.corrcoef(matrix[0], matrix[-1])[0, 1]
    assert {"final_accuracy", "final_lm_loss", "base_lm_loss", "tuned_param_ratio"} <= set(
        run.summary
    )
    assert run.graph().n_edges == matrix.shape[1]


def test_failed_write_rolls_back_and_keeps_earlier_rows(tmp_path):
    n_edges = GRAPH.n_edges
    writer = create(tmp_path)
    writer.log_step(0, **step_fields(0))
    # A real SQLite "disk full": cap the file at its current size.
    pages = writer._conn.execute("PRAGMA page_count").fetchone()[0]
    writer._conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(
        RunStoreError, match=r"r1/run.sqlite: write failed \(database or disk is full"
    ):
        for step in range(1, 200):
            writer.add_snapshot(step, "during", "sv", np.ones(n_edges), np.ones(n_edges, bool))
    writer.close()
    run = Run(tmp_path / "r1")
    assert run.steps()["step"].tolist() == [0]
    frame, matrix = run.score_matrix()  # whatever committed before the failure reads back whole
    assert (matrix == 1).all() and len(frame) == matrix.shape[0]


def test_damaged_run_row_and_mismatched_graph_are_corrupt(tmp_path):
    create(tmp_path, run_id="badjson").close()
    conn = sqlite3.connect(tmp_path / "badjson" / "run.sqlite")
    conn.execute("UPDATE run SET config = '{not json'")
    conn.commit()
    conn.close()
    with pytest.raises(RunCorrupt, match=r"badjson/run.sqlite: invalid JSON"):
        Run(tmp_path / "badjson")
    (summary,) = RunStore([tmp_path]).list_runs()
    assert summary.status == "corrupt" and "invalid JSON" in summary.message

    meta = graph_meta()
    meta["n_layers"] = 3  # the edge names are of a 2-layer graph
    create(tmp_path, run_id="mismatch", graph_meta=meta).close()
    with pytest.raises(RunCorrupt, match="recorded edge names do not match"):
        Run(tmp_path / "mismatch").graph()
