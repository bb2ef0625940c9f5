"""Cross-run alignment against brute force over the stored snapshots, on synthetic runs written
through the real run writer."""

from __future__ import annotations

import numpy as np
import pytest

from circuitviz.analysis.alignment import circuit_alignment, diverging_edges
from circuitviz.graph.names import parse_edge, parse_node
from circuitviz.graph.topology import build_graph
from circuitviz.runs import Run
from tests.support.synthetic import write_synthetic_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    graph = build_graph(3, 4)
    a = write_synthetic_run(root, graph=graph, seed=1, n_steps=100, snapshot_every=25)
    b = write_synthetic_run(root, graph=graph, seed=2, n_steps=100, snapshot_every=25)
    c = write_synthetic_run(root, graph=build_graph(2, 4), seed=3, n_steps=100)
    return Run(root / a), Run(root / b), Run(root / c)


def _brute_force(run: Run, step: int, k: int) -> tuple[set, set]:
    frame, matrix = run.score_matrix(task=run.task)
    row = matrix[[i for i, s in enumerate(frame["step"]) if s == step][-1]]
    names = run.edge_names()
    ranked = sorted(range(len(names)), key=lambda i: (-abs(float(row[i])), i))[:k]
    edges = {names[i] for i in ranked}
    nodes = {parse_node(end).base for e in edges for end in parse_edge(e)}
    return edges, nodes


def test_iou_at_each_shared_step_equals_brute_force(runs):
    a, b, _ = runs
    table = circuit_alignment(a, b, budgets=(0.05, 0.3))
    assert sorted(set(table["step"])) == [0, 25, 50, 75, 100]
    for row in table.itertuples():
        ea, na = _brute_force(a, row.step, row.k)
        eb, nb = _brute_force(b, row.step, row.k)
        assert row.edge_iou == pytest.approx(len(ea & eb) / len(ea | eb))
        assert row.node_iou == pytest.approx(len(na & nb) / len(na | nb))
    assert table["edge_iou"].between(0, 1).all() and table["edge_iou"].nunique() > 1
    same = circuit_alignment(a, a)
    assert (same["edge_iou"] == 1).all() and (same["node_iou"] == 1).all()


def test_diverging_edges_are_strengthened_in_one_run_only(runs):
    a, b, _ = runs
    table = diverging_edges(a, b, top=10)
    assert 0 < len(table) <= 10
    assert (table["change_a"] > 0).all() and (table["change_b"] <= 0).all()
    gaps = (table["change_a"] - table["change_b"]).to_numpy()
    assert np.all(np.diff(gaps) <= 1e-12)


def test_runs_on_different_graphs_are_refused(runs):
    a, _, c = runs
    with pytest.raises(ValueError, match="different graphs"):
        circuit_alignment(a, c)


def test_analyse_against_stores_the_alignment_without_a_model(runs, capsys):
    import json

    from circuitviz.cli import main

    a, b, c = runs
    root = str(a.dir.parent)
    argv = ["analyse", a.id, "--against", b.id, "--only", "alignment", "--runs-dir", root]
    assert main([*argv, "--budgets", "0.05", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stored = summary["alignment"][b.id]["0.05"]
    table = circuit_alignment(a, b, budgets=(0.05,))
    assert [r["step"] for r in stored] == table["step"].tolist()
    assert [r["edge_iou"] for r in stored] == pytest.approx(table["edge_iou"].tolist())
    assert [r["node_iou"] for r in stored] == pytest.approx(table["node_iou"].tolist())
    assert summary["steps"] == []  # nothing was analysed at a checkpoint
    assert main(["analyse", a.id, "--only", "alignment", "--runs-dir", root]) == 2
    assert "--against" in capsys.readouterr().err
    assert (
        main(["analyse", a.id, "--against", c.id, "--only", "alignment", "--runs-dir", root]) == 2
    )
    assert "different graphs" in capsys.readouterr().err
