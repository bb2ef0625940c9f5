"""``circuitviz export`` and the export formats, on a synthetic run written by the run store."""

import csv
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.synthetic import write_analysed_run, write_synthetic_run

from circuitviz.cli import main
from circuitviz.graph.io import load_json
from circuitviz.graph.topology import build_graph
from circuitviz.plotting.edges import select_edges
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.rundata import load_run_frames, node_color_modes, node_values
from circuitviz.plotting.view import ViewState
from circuitviz.runs import RunStore


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_id = write_synthetic_run(root, n_steps=60, graph=build_graph(2, 3), snapshot_every=20)
    return root, run_id


def export(runs, tmp_path, name, *extra):
    root, run_id = runs
    out = tmp_path / name
    code = main(["export", "--runs-dir", str(root), "--run", run_id, "--out", str(out), *extra])
    return code, out


@pytest.mark.parametrize(
    ("name", "magic"),
    [
        ("c.svg", b"<?xml"),
        ("c.pdf", b"%PDF"),
        ("c.png", b"\x89PNG"),
        ("c.html", b"<!doc"),
        ("c.gif", b"GIF8"),
    ],
)
def test_figure_formats(runs, tmp_path, name, magic):
    code, out = export(runs, tmp_path, name, "--top-n", "15", "--compare", "before")
    assert code == 0
    assert out.read_bytes()[:5].lower().startswith(magic.lower())


def test_html_is_self_contained(runs, tmp_path):
    code, out = export(runs, tmp_path, "c.html", "--top-n", "15")
    text = out.read_text()
    assert code == 0 and "Plotly.newPlot" in text
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing loaded from elsewhere


def test_gif_has_a_frame_per_snapshot(runs, tmp_path):
    root, run_id = runs
    n_snapshots = len(RunStore([root]).open(run_id).snapshots())
    code, out = export(runs, tmp_path, "c.gif", "--top-n", "10")
    assert code == 0 and Image.open(out).n_frames == n_snapshots


def test_json_is_the_graph_format_and_matches_the_view(runs, tmp_path):
    root, run_id = runs
    code, out = export(runs, tmp_path, "c.json", "--top-n", "12", "--step", "before")
    assert code == 0
    scored = load_json(out)  # the graph module reads what the dashboard writes
    snap = RunStore([root]).open(run_id).snapshot(1)
    shown = set(select_edges(snap.scores, top_n=12).tolist())
    in_graph = scored.circuit.edge_mask[scored.graph.valid_mask]
    assert set(in_graph.nonzero().flatten().tolist()) == shown
    assert json.loads(out.read_text())["metadata"]["step"] == "before"


def test_csv_lists_shown_edges_strongest_first(runs, tmp_path):
    code, out = export(runs, tmp_path, "c.csv", "--top-n", "8", "--step", "after")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert code == 0 and len(rows) == 8
    assert [int(r["rank"]) for r in rows] == list(range(1, 9))
    assert all(r["edge"] == f"{r['src']}->{r['dst']}" for r in rows)


def test_view_file_round_trip(runs, tmp_path):
    root, run_id = runs
    code, out = export(
        runs, tmp_path, "v.view.json", "--step", "20", "--top-n", "all", "--node", "m1"
    )
    assert code == 0
    view = ViewState.from_json(out.read_text())
    assert (view.run, view.step, view.top_n, view.node) == (run_id, "20", None, "m1")
    again = tmp_path / "again.csv"
    assert main(["export", "--runs-dir", str(root), "--view", str(out), "--out", str(again)]) == 0
    assert again.read_text().count("\n") > 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run", "no-such-run"], "no run 'no-such-run'"),
        (["--step", "7"], "no snapshot at step '7'"),
        (["--top-n", "lots"], "--top-n"),
        (["--node", "a7.h7"], "not a box"),
        (["--node-color", "dla"], "no dla analysis to colour boxes by: run `circuitviz analyse"),
    ],
)
def test_bad_input_is_one_clear_line(runs, tmp_path, capsys, extra, message):
    root, run_id = runs
    argv = ["export", "--runs-dir", str(root), "--run", run_id, "--out", str(tmp_path / "x.svg")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_extension_and_missing_run(runs, tmp_path, capsys):
    root, run_id = runs
    assert (
        main(["export", "--runs-dir", str(root), "--run", run_id, "--out", str(tmp_path / "x.bmp")])
        == 2
    )
    assert "cannot tell the format" in capsys.readouterr().err
    assert main(["export", "--runs-dir", str(root), "--out", str(tmp_path / "x.svg")]) == 2
    assert "--run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A run ``circuitviz analyse`` has measured at steps 0, 40 and 80."""
    root = tmp_path_factory.mktemp("analysed")
    return root, write_analysed_run(root, seed=2)


def test_node_values_are_the_stored_analyses_per_box(analysed):
    root, run_id = analysed
    run = RunStore([root]).open(run_id)
    frames = load_run_frames(run)
    layout = layout_for(3, 3)
    assert node_color_modes(frames) == ["kind", "dla", "previous_token", "induction"]
    table = run.analyses()
    for mode in ("dla", "previous_token"):
        values = node_values(frames, layout, mode)
        assert values.steps.tolist() == [0, 40, 80]
        prefix = "" if mode == "dla" else f"{mode}:"
        kind = "dla" if mode == "dla" else "roles"
        for row, step in enumerate(values.steps.tolist()):
            for n, name in enumerate(layout.node_names):  # the oracle: one lookup per box
                hit = table[
                    (table.step == step) & (table.kind == kind) & (table.key == prefix + name)
                ]
                want = float(hit["value"].iloc[0]) if len(hit) else float("nan")
                np.testing.assert_equal(float(values.values[row, n]), np.float32(want))
    dla = node_values(frames, layout, "dla")
    assert dla.scale == pytest.approx(1.0) and dla.sqrt  # a2.h1's +1 at step 0 is the largest
    assert node_values(frames, layout, "previous_token").scale == 1.0  # a share of attention
    assert node_values(frames, layout, "kind") is None
    assert node_values(frames, layout, "copying") is None  # never measured


def test_export_colours_boxes_by_an_analysis(analysed, tmp_path):
    root, run_id = analysed
    out = tmp_path / "dla.svg"
    argv = ["export", "--runs-dir", str(root), "--run", run_id, "--step", "60", "--out", str(out)]
    assert main([*argv, "--node-color", "dla"]) == 0
    svg = out.read_text()
    assert "box DLA &gt; 0 (step 40)" in svg  # step 60 shows the latest analysed step, 40
    assert main([*argv[:-1], str(tmp_path / "roles.svg"), "--node-color", "previous_token"]) == 0
    roles = (tmp_path / "roles.svg").read_text()
    assert "box previous-token score (step 40; full colour at 1.00)" in roles


def test_copying_colours_scale_by_the_strongest_copier():
    """A negative copying score (a head suppressing what it reads) is no copying: white, and it
    does not set the full-colour scale; DLA takes either sign."""
    rows = [
        {"step": 0, "kind": "roles", "key": "copying:a0.h0", "value": 0.5},
        {"step": 0, "kind": "roles", "key": "copying:a0.h1", "value": -2.0},
        {"step": 0, "kind": "dla", "key": "a0.h0", "value": 0.5},
        {"step": 0, "kind": "dla", "key": "a0.h1", "value": -2.0},
    ]
    frames = SimpleNamespace(analyses=pd.DataFrame(rows))
    layout = layout_for(2, 2)
    assert node_values(frames, layout, "copying").scale == 0.5
    assert node_values(frames, layout, "dla").scale == 2.0


def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(runs, tmp_path, capsys):
    root, run_id = runs
    (tmp_path / "taken.svg").mkdir()
    (tmp_path / "a_file").write_text("")
    cases = {
        str(tmp_path): "is a directory; give a file name",  # as the export test above read it
        str(tmp_path / "taken.svg"): "is a directory; give a file name",
        str(tmp_path / "missing" / "c.svg"): "does not exist; create it first",
        str(tmp_path / "a_file" / "c.svg"): "is a file, not a directory",
    }
    for out, message in cases.items():
        extra = ["--format", "graphml"] if out == str(tmp_path) else []
        argv = ["export", "--runs-dir", str(root), "--run", run_id, "--out", out, *extra]
        assert main(argv) == 2, out
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_format_that_contradicts_the_file_name_is_refused(runs, tmp_path, capsys):
    code, out = export(runs, tmp_path, "c.gexf", "--format", "graphml")
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "names a gexf file but --format is graphml" in err and "x.graphml" in err
    # A view and a circuit are both JSON, but the names tell them apart, both ways.
    for name, asked in (("c.view.json", "json"), ("c.json", "view")):
        assert export(runs, tmp_path, name, "--format", asked)[0] == 2
        assert f"--format is {asked}" in capsys.readouterr().err
    # A name that asks for no format, the format's own name, or an HTML page for either HTML
    # format, is fine.
    code, out = export(runs, tmp_path, "c.txt", "--format", "graphml")
    assert code == 0 and out.read_bytes().startswith(b"<?xml")
    code, out = export(runs, tmp_path, "c.view", "--format", "view")
    assert code == 0 and json.loads(out.read_text())["run"]
    code, out = export(runs, tmp_path, "c.html", "--format", "player")
    assert code == 0 and out.read_bytes()[:5].lower() == b"<!doc"


def test_a_tuning_run_s_before_circuit_is_exported_with_the_task_it_belongs_to(tmp_path, capsys):
    """The bundled circuit-tuning run stores its "before" circuit for its original task
    (sv-agreement): --step before names the --task that has it, and --task draws it."""
    base = ["export", "--runs-dir", str(tmp_path), "--run", "sv-disagreement-circuit"]
    out = tmp_path / "before.svg"
    assert main([*base, "--step", "before", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "its 'before' circuit is of task sv-agreement: add --task sv-agreement" in err
    assert main([*base, "--step", "before", "--task", "sv-agreement", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")
    capsys.readouterr()
    assert main([*base, "--task", "nope", "--out", str(out)]) == 2
    assert "stored no circuit of task 'nope'; it has: sv-agreement, sv-disagreement" in (
        capsys.readouterr().err
    )


def test_focus_needs_the_box_it_focuses_on(runs, tmp_path, capsys):
    code, out = export(runs, tmp_path, "f.svg", "--focus")
    assert code == 2 and not out.exists()
    assert "--focus draws one box's neighbourhood: say which with --node" in capsys.readouterr().err
    code, out = export(runs, tmp_path, "f.svg", "--focus", "--node", "a1.h0")
    assert code == 0 and out.read_bytes().startswith(b"<?xml")


def test_a_saved_view_s_task_stays_with_its_own_run(runs, tmp_path, capsys):
    """A view saved on the tuning run's sv-agreement circuit keeps that task when exported as it
    is, and leaves it behind when --run points the view at another run."""
    saved = tmp_path / "agreement.view.json"
    base = ["export", "--runs-dir", str(runs[0])]
    argv = [
        *base,
        "--run",
        "sv-disagreement-circuit",
        "--task",
        "sv-agreement",
        "--out",
        str(saved),
    ]
    assert main(argv) == 0
    assert json.loads(saved.read_text())["task"] == "sv-agreement"
    again = tmp_path / "again.view.json"
    assert main([*base, "--view", str(saved), "--out", str(again)]) == 0
    assert json.loads(again.read_text())["task"] == "sv-agreement"
    other = tmp_path / "other.svg"
    assert main([*base, "--view", str(saved), "--run", runs[1], "--out", str(other)]) == 0
    assert other.read_bytes().startswith(b"<?xml")
    capsys.readouterr()
