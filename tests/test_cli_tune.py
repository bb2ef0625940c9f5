"""``circuitviz tune``, ``sweep`` and ``rescore`` through the real command line entry point."""

import json

import pytest

from circuitviz.cli import main
from circuitviz.runs import Run, RunStore

TINY = [
    "--model",
    "random:gpt2-tiny",
    "--task",
    "sv-disagreement",
    "--steps",
    "4",
    "--batch-size",
    "8",
    "--n-train",
    "64",
    "--n-dev",
    "16",
    "--n-probe",
    "8",
    "--n-heldout",
    "8",
    "--eval-every",
    "2",
    "--checkpoint-every",
    "2",
    "--top-n",
    "20",
    "--no-progress",
]


@pytest.fixture(scope="module", autouse=True)
def _demo_tokenizer(demo_tokenizer_dir):
    return demo_tokenizer_dir


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def test_tune_prints_the_run_first_and_records_it(tmp_path, capsys):
    assert main(["tune", *TINY, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    first, second = out.splitlines()[:2]
    run_id = first.removeprefix("run ")
    assert second.strip() == f"dir {tmp_path / run_id}"
    run = RunStore([tmp_path]).open(run_id)
    assert run.status == "finished" and len(run.steps()) == 4
    assert main(["runs", "show", run_id, "--runs-dir", str(tmp_path), "--json"]) == 0
    summary = _json_out(capsys)["summary"]
    for key in ("final_accuracy", "final_lm_loss", "base_lm_loss", "tuned_param_ratio"):
        assert isinstance(summary[key], float)


def test_tune_json_full_method_and_resume_of_a_stopped_run(tmp_path, capsys):
    assert main(["tune", *TINY, "--method", "full", "--runs-dir", str(tmp_path), "--json"]) == 0
    payload = _json_out(capsys)
    assert payload["summary"]["tuned_param_ratio"] == pytest.approx(1.0)
    run = Run(payload["dir"])
    # Pretend the process died after its step-2 checkpoint: resume must finish the run.
    from circuitviz.runs import RunWriter

    with RunWriter.resume(run.dir) as writer:
        writer.set_status("stopped", "killed")
    assert main(["tune", "--resume", run.id, "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    assert Run(run.dir).status == "finished"
    assert main(["tune", "--resume", run.id, "--runs-dir", str(tmp_path)]) == 0
    assert "already finished" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--every", "0"], "--every must be an integer >= 1"),
        (["--steps", "0"], "--steps must be an integer >= 1"),
        (["--top-n", "100000"], "larger than the graph"),
        (["--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["--model", "./no/such/model"], "no such model directory"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, extra, message):
    assert main(["tune", *TINY, *extra, "--runs-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing half-created


def test_unknown_run_and_unwritable_runs_dir(tmp_path, capsys):
    assert main(["tune", "--resume", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert main(["tune", *TINY, "--runs-dir", str(blocker)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_sweep_and_rescore(tmp_path, capsys):
    argv = ["sweep", *TINY[:-3], "--no-progress", "--top-n", "5,40", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    payload = _json_out(capsys)
    rows = payload["rows"]
    assert [row["top_n"] for row in rows] == [5, 40]
    assert rows[0]["mean_nodes"] < rows[1]["mean_nodes"]
    assert rows[0]["tuned_param_ratio"] < rows[1]["tuned_param_ratio"]
    runs = [RunStore([tmp_path]).open(row["run_id"]) for row in rows]
    assert {run.sweep_id for run in runs} == {payload["sweep_id"]}
    # Both runs started from the same weights: their base evaluations agree exactly.
    assert runs[0].summary["base_lm_loss"] == runs[1].summary["base_lm_loss"]

    run = runs[1]
    assert main(["rescore", run.id, "--runs-dir", str(tmp_path), "--resamples", "3", "--json"]) == 0
    assert _json_out(capsys)["steps"] == [0, 2, 4]
    run = Run(run.dir)
    assert run.status == "finished"
    floor = run.noise_floor()
    assert set(floor["probe"]) == {"fixed", "resample-3"}
    std = run.noise_floor_std()
    assert std is not None and std.shape == (run.n_edges,) and (std > 0).any()
    notes = run.snapshots()
    assert (notes["note"] == "rescore").sum() >= 2


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_sweep_of_a_method_that_ignores_n_is_refused(tmp_path, capsys, method):
    argv = ["sweep", *TINY[:-3], "--no-progress", "--top-n", "5,40", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--method", method]) == 2
    err = capsys.readouterr().err
    assert f"--method {method} does not use" in err and "circuit-lora" in err
    assert not list(tmp_path.iterdir())  # no run was created


def test_lora_flags_are_refused_for_other_methods(tmp_path, capsys):
    argv = ["tune", *TINY, "--runs-dir", str(tmp_path), "--lora-rank", "8", "--lora-dropout", "0"]
    assert main(argv) == 2
    assert "--lora-dropout, --lora-rank: for --method lora or circuit-lora only" in (
        capsys.readouterr().err
    )
    assert not list(tmp_path.iterdir())


def test_the_text_report_shows_a_missing_figure_as_a_dash(capsys):
    """An instruction run without reference answers has no accuracy: None, not a crash."""
    import argparse

    from circuitviz.cli.tune import _report

    args = argparse.Namespace(json=False)
    assert _report(args, "r", "d", {"final_accuracy": None, "final_lm_loss": 3.25}) == 0
    out = capsys.readouterr().out
    assert "final_accuracy       -" in out and "final_lm_loss        3.25" in out


def test_the_command_that_continues_a_run_names_it_as_it_was_named():
    """By id (with the runs directory it lives in), or by the path it was resumed by, quoted."""
    from argparse import Namespace

    from circuitviz.cli.tune import _continue_command

    by_id = Namespace(resume=None, runs_dir="my runs")
    assert (
        _continue_command(by_id, "r1", 2)
        == "circuitviz tune --resume r1 --nproc 2 --runs-dir 'my runs'"
    )
    assert _continue_command(by_id, "r1") == "circuitviz tune --resume r1 --runs-dir 'my runs'"
    by_path = Namespace(resume="/data/old runs/r1", runs_dir=None)
    assert (
        _continue_command(by_path, "r1", 2)
        == "circuitviz tune --resume '/data/old runs/r1' --nproc 2"
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--steps", "50"], "--steps would be ignored: drop it"),
        (["--lr", "1e-3", "--ig-steps", "3"], "--ig-steps, --lr would be ignored: drop them"),
        (["--model=demo", "--task", "sv-agreement"], "--model, --task would be ignored"),
        (["--dtype", "float64", "--run-id", "other"], "--run-id, --dtype would be ignored"),
    ],
)
def test_settings_beside_resume_are_refused_by_name_before_any_work(tmp_path, capsys, extra, named):
    """A resumed run continues with the settings it started with; a setting given beside --resume
    was silently dropped (--steps 50 ran on to the run's 400). Checked before the run is opened:
    an unknown run gets this line, not "no run"."""
    argv = ["tune", "--resume", "nope", *extra, "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "--resume nope continues the run" in err and "no run" not in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
