"""sweep --ray with a real local Ray (2 CPUs): the runs are the sequential sweep's runs."""

from __future__ import annotations

import json

import pytest

from circuitviz.cli import main
from circuitviz.runs import RunStore

pytestmark = pytest.mark.slow  # a local Ray takes ~10 s to start, and each task loads a model

ARGS = [
    *("--model", "random:gpt2-tiny", "--task", "sv-disagreement", "--steps", "2", "--every", "1"),
    *("--batch-size", "8", "--n-train", "32", "--n-dev", "8", "--n-probe", "8"),
    *("--n-heldout", "8", "--no-progress", "--top-n", "5,40", "--json"),
]


def _rows(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_a_ray_sweep_runs_the_sequential_sweeps_runs_in_parallel(
    demo_tokenizer_dir, tmp_path, capsys
):
    import ray  # installed by ./run.sh test (the ray extra)

    # No Ray running: the sweep starts a local one with this machine's CPUs, and stops it.
    assert main(["sweep", *ARGS, "--runs-dir", str(tmp_path / "ray"), "--ray"]) == 0
    on_ray = _rows(capsys)
    assert not ray.is_initialized()
    assert main(["sweep", *ARGS, "--runs-dir", str(tmp_path / "seq")]) == 0
    in_order = _rows(capsys)
    assert [r["top_n"] for r in on_ray["rows"]] == [r["top_n"] for r in in_order["rows"]] == [5, 40]
    for a, b in zip(on_ray["rows"], in_order["rows"]):
        for key in ("final_task_metric", "final_accuracy", "mean_nodes", "tuned_param_ratio"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    runs = [RunStore([tmp_path / "ray"]).open(row["run_id"]) for row in on_ray["rows"]]
    assert {run.sweep_id for run in runs} == {on_ray["sweep_id"]}
    assert all(run.status == "finished" for run in runs)


def test_a_ray_sweep_refuses_a_method_that_ignores_n(tmp_path, capsys):
    argv = ["sweep", *ARGS, "--runs-dir", str(tmp_path), "--ray", "--method", "full"]
    assert main(argv) == 2
    assert "--method full does not use" in capsys.readouterr().err


def test_an_address_where_no_ray_answers_is_one_line(demo_tokenizer_dir, tmp_path, capsys):
    argv = ["sweep", *ARGS, "--runs-dir", str(tmp_path), "--ray", "127.0.0.1:1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers at '127.0.0.1:1'" in err and "ray start --head" in err
    assert not list(tmp_path.iterdir())
