"""``circuitviz runs list`` and ``circuitviz runs show`` on real run directories."""

from __future__ import annotations

import json

from support.synthetic import write_synthetic_run

from circuitviz.cli import main


def make_runs(tmp_path) -> str:
    run_id = write_synthetic_run(
        tmp_path, n_steps=40, snapshot_every=20, eval_every=10, run_id="good"
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.sqlite").write_bytes(b"not sqlite " * 50)
    return run_id


def test_list_table_and_json(tmp_path, capsys):
    make_runs(tmp_path)
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "id",
        "status",
        "kind",
        "task",
        "method",
        "model",
        "steps",
        "created",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["good"][1:7] == ["finished", "tune", "sv", "circuit", "synthetic", "40"]
    assert rows["broken"][1] == "corrupt"
    assert "broken: " in lines[3] and "not a SQLite database" in lines[3]

    assert main(["runs", "list", "--runs-dir", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    by_id = {run["id"]: run for run in payload["runs"]}
    assert by_id["good"]["n_steps"] == 40 and by_id["good"]["status"] == "finished"
    assert by_id["broken"]["status"] == "corrupt" and "not a SQLite" in by_id["broken"]["message"]
    assert payload["roots"] == [str(tmp_path)]


def test_list_with_no_runs_says_where_it_looked(tmp_path, capsys):
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == f"no runs under {tmp_path / 'none'}"


def test_show_json_and_text(tmp_path, capsys):
    make_runs(tmp_path)
    assert main(["runs", "show", "good", "--runs-dir", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["id"] == "good" and payload["status"] == "finished"
    assert payload["counts"] == {
        "steps": 40,
        "evals": 5,
        "snapshots": 3,
        "checkpoints": 0,
        "head_changes": 2 * 34,
        "noise_floor": 0,
    }
    assert set(payload["summary"]) >= {
        "final_accuracy",
        "final_lm_loss",
        "base_lm_loss",
        "tuned_param_ratio",
    }
    assert payload["config"]["n_steps"] == 40 and payload["versions"]["torch"]
    assert main(["runs", "show", "good", "--runs-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "status   finished" in text and "final_accuracy" in text and "40 steps" in text


def test_show_unknown_and_corrupt_runs_fail_clearly(tmp_path, capsys):
    make_runs(tmp_path)
    assert main(["runs", "show", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and "known runs: broken, good" in err
    assert main(["runs", "show", "broken", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken/run.sqlite: not a SQLite database" in err and "Traceback" not in err


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """``circuitviz runs show RUN --json | head``: head closes the pipe after its lines; the
    command ends as a program stopped by SIGPIPE does, without a traceback."""
    import os
    import signal
    import subprocess
    import sys

    run_id = make_runs(tmp_path)
    argv = ["runs", "show", run_id, "--runs-dir", str(tmp_path), "--json"]
    entry = "import sys; from circuitviz.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", entry, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Without PYTHONUNBUFFERED a piped stdout is buffered and flushed late: the usual case.
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        | {"PYTHONPATH": os.getcwd()},
    )
    process.stdout.close()  # before the command has started: its first write meets no reader
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_runs_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    for argv in (["runs", "list"], ["runs", "show", "good"]):
        assert main([*argv, "--runs-dir", str(tmp_path / "a_file")]) == 2
        assert f"--runs-dir {tmp_path / 'a_file'} is a file" in capsys.readouterr().err
    # An empty directory is a fact, not an error (as one not made yet is, above).
    (tmp_path / "empty").mkdir()
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "empty")]) == 0
    assert "no runs under" in capsys.readouterr().out
