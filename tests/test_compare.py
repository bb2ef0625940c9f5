"""``circuitviz compare``: one row per run from the run store, as JSON, CSV, LaTeX, Markdown and text,
and the same table on the Dashboard's Dynamics page."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from circuitviz.cli import main
from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig

APP = Path(__file__).resolve().parents[1] / "app"
TINY = TuneConfig(
    top_n=40,
    steps=3,
    batch_size=4,
    n_train=16,
    n_dev=8,
    n_probe=4,
    n_heldout=4,
    eval_every=0,
    snapshot_every=0,
    checkpoint_every=0,
    lr=0.05,
    lora_rank=4,
)
METHODS = ("circuit", "full", "lora", "circuit-lora")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for method in METHODS:
        model = load_model("demo", device="cpu")
        config = dataclasses.replace(TINY, method=method, every=2)
        with create_run(model, "sv-disagreement", config, root, run_id=f"r-{method}") as writer:
            run_tuning(model, "sv-disagreement", config, writer)
    return root


def _compare(root, capsys, *flags, runs=METHODS):
    capsys.readouterr()
    code = main(["compare", *(f"r-{m}" for m in runs), "--runs-dir", str(root), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_is_one_object_per_run_with_the_runs_own_figures(root, capsys):
    code, out, _ = _compare(root, capsys, "--json", "--base")
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 5
    assert [row["method"] for row in rows] == ["base", *METHODS]
    assert all({"run_id", "method", "tuned_param_ratio"} <= set(row) for row in rows)
    assert len({tuple(row) for row in rows}) == 1  # the same keys, in the same order
    for row in rows[1:]:
        summary = Run(root / row["run_id"]).summary
        for key in ("final_accuracy", "final_lm_loss", "base_lm_loss", "tuned_param_ratio"):
            assert row[key] == pytest.approx(summary[key]), key
        assert row["lm_loss_increase"] == pytest.approx(summary["lm_loss_increase"])
        assert row["n_steps"] == 3
        assert 0 < row["step_seconds"] <= row["seconds_per_step"]  # a step without evaluations
    by_method = {row["method"]: row for row in rows}
    assert by_method["full"]["tuned_param_ratio"] == pytest.approx(1.0)
    assert by_method["lora"]["setting"] == "r=4" and by_method["lora"]["top_n"] is None
    assert by_method["circuit-lora"]["setting"] == "r=4, N=40, K=2"
    assert by_method["circuit"]["setting"] == "N=40, K=2"
    lora = by_method["lora"]["tuned_param_ratio"]
    assert by_method["circuit-lora"]["tuned_param_ratio"] > 0 and lora < 0.2
    base = by_method["base"]
    assert base["final_lm_loss"] == pytest.approx(by_method["circuit"]["base_lm_loss"])
    assert base["tuned_param_ratio"] == 0 and base["run_id"] is None


def test_csv_has_every_figure_and_parses_back(root, capsys):
    code, out, _ = _compare(root, capsys, "--csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    _, as_json, _ = _compare(root, capsys, "--json")
    rows = json.loads(as_json)
    assert [r["run_id"] for r in parsed] == [r["run_id"] for r in rows]
    assert list(parsed[0]) == list(rows[0])
    for got, want in zip(parsed, rows):
        assert float(got["tuned_param_ratio"]) == pytest.approx(want["tuned_param_ratio"])
        assert got["top_n"] == ("" if want["top_n"] is None else str(want["top_n"]))


def test_latex_markdown_and_text_tables(root, capsys):
    code, out, _ = _compare(root, capsys, "--latex", runs=("circuit", "circuit-lora"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "\\begin{tabular}{lllrrrrrrr}" and lines[-1] == "\\end{tabular}"
    assert "\\toprule" in lines and "\\bottomrule" in lines
    assert sum(line.endswith("\\\\") for line in lines) == 3  # header and two runs
    assert "circuit-lora" in out and "%" not in out.replace("\\%", "")
    code, out, _ = _compare(root, capsys, "--markdown", "--base")
    assert out.splitlines()[1].startswith("|---|") and len(out.splitlines()) == 2 + 5
    code, out, _ = _compare(root, capsys)
    header = out.splitlines()[0].split()
    assert header[:3] == ["run", "method", "N,"] and "s/step" in header


def test_bad_runs_are_one_line(root, capsys):
    code, _, err = _compare(root, capsys, runs=("circuit", "nope"))
    assert code == 2 and "no run 'r-nope'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:  # argparse: the formats exclude each other
        main(["compare", "r-circuit", "--json", "--csv", "--runs-dir", str(root)])
    assert info.value.code == 2


def test_the_dynamics_page_shows_the_table_above_the_curves(root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(root))
    monkeypatch.syspath_prepend(str(APP))
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=60)
    at.query_params["run"] = "r-circuit-lora"
    at.run()
    at.switch_page("views/dynamics.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["r-circuit-lora"]
    at.multiselect(key="w_overlay").select("r-full").select("r-lora").run()
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["r-circuit-lora", "r-full", "r-lora"]
    assert table["tuned params"].tolist()[1] == pytest.approx(1.0)
    assert "N, K / rank" in table.columns and "change (%)" in table.columns
