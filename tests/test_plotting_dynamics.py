"""Dynamics and head figures: the numbers behind them against brute-force oracles."""

import numpy as np
import pandas as pd
import pytest

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.dynamics import (
    RunSeries,
    circuit_size_counts,
    circuit_size_heatmap,
    dynamics_figure,
    edge_trend_figure,
    edge_trends,
    intrinsic_dimension_figure,
    node_history_figure,
)
from circuitviz.plotting.heads import (
    head_attribution,
    head_heatmap_figure,
    param_change_figure,
    param_change_matrix,
)
from circuitviz.plotting.layout import build_layout


def test_edge_trends_match_polyfit_and_corrcoef():
    rng = np.random.default_rng(0)
    steps = np.array([0, 10, 20, 35, 50])
    matrix = rng.standard_normal((5, 40))
    matrix[:, 3] = 7.0  # constant edge: r = 0
    slope, r = edge_trends(steps, matrix)
    for e in range(40):
        if e == 3:
            assert r[e] == 0 and slope[e] == pytest.approx(0)
            continue
        assert slope[e] == pytest.approx(np.polyfit(steps, matrix[:, e], 1)[0])
        assert r[e] == pytest.approx(np.corrcoef(steps, matrix[:, e])[0, 1])


def test_edge_trend_figure_picks_strong_trends():
    steps = np.arange(6)
    matrix = np.zeros((6, 4))
    matrix[:, 0] = steps * 2.0  # strengthened
    matrix[:, 1] = -steps * 1.0  # weakened
    matrix[:, 2] = [0, 1, 0, 1, 0, 1]  # no trend
    fig = edge_trend_figure(steps, matrix, ["e0", "e1", "e2", "e3"], min_r=0.5)
    names = [t.name for t in fig.data]
    assert any(n.startswith("e0 ") for n in names) and any(n.startswith("e1 ") for n in names)
    assert not any(n.startswith("e2 ") for n in names)
    only = edge_trend_figure(steps, matrix, ["e0", "e1", "e2", "e3"], candidates=np.eye(4)[1] > 0)
    assert [t.name.split()[0] for t in only.data] == ["e1"]


def test_circuit_size_counts_brute_force():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((4, 100))
    thresholds = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
    counts = circuit_size_counts(matrix, thresholds)
    for t, thr in enumerate(thresholds):
        for s in range(4):
            assert counts[t, s] == sum(abs(v) >= thr for v in matrix[s])
    fig = circuit_size_heatmap(["a", "b", "c", "d"], matrix, thresholds)
    assert np.array_equal(np.asarray(fig.data[0].customdata), counts)


def test_dynamics_figure_overlays_runs():
    steps = pd.DataFrame(
        {"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0], "tuned_ratio": [0.1] * 3, "n_nodes": [5] * 3}
    )
    evals = pd.DataFrame({"step": [0, 3], "task_metric": [0.0, 2.0], "lm_loss": [3.0, 3.1]})
    runs = [RunSeries(label=f"run{i}", steps=steps, evals=evals) for i in range(2)]
    fig = dynamics_figure(runs)
    assert {t.name for t in fig.data} == {"run0", "run1"}
    assert len({t.line.color for t in fig.data}) == 2
    assert sum(t.showlegend for t in fig.data) == 2  # one legend entry per run


def test_intrinsic_dimension_sorted_by_top_n():
    sweep = pd.DataFrame({"top_n": [50, 10, 25], "task_metric": [3.0, 1.0, 2.0]})
    fig = intrinsic_dimension_figure(sweep)
    assert list(fig.data[0].x) == [10, 25, 50]
    assert list(fig.data[0].y) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="top_n"):
        intrinsic_dimension_figure(pd.DataFrame({"n": [1]}))


def test_head_attribution_matches_a_loop():
    graph = build_graph(2, 3)
    layout = build_layout(graph)
    scores = np.random.default_rng(2).standard_normal(layout.n_edges)
    got = head_attribution(layout, scores)
    expected = np.zeros((2, 3))
    for e, name in enumerate(layout.edge_names):
        src, dst = name.split("->")
        for end in (src, dst):
            base = end.split("<")[0]
            if base.startswith("a"):
                layer, head = base[1:].split(".h")
                expected[int(layer), int(head)] += abs(scores[e])
    np.testing.assert_allclose(got, expected)
    fig = head_heatmap_figure({"before": got, "after": -got}, diverging=True)
    assert fig.data[0].zmid == 0 and len(fig.data) == 2


def test_param_change_matrix_and_figure():
    rows = [
        {"step": 5, "layer": 1, "head": 2, "kind": "v", "rel_change": 0.25},
        {"step": 5, "layer": 0, "head": -1, "kind": "mlp", "rel_change": 0.5},
    ]
    changes = pd.DataFrame(rows)
    matrix = param_change_matrix(changes, "v", 2, 3)
    assert matrix[1, 2] == 0.25 and np.isnan(matrix[0, 0])
    fig = param_change_figure({"circuit": changes, "full": changes}, 2, 3)
    assert len(fig.data) == 8  # 2 runs x (Q, K, V, O)
    with pytest.raises(ValueError, match="kind"):
        param_change_matrix(changes, "x", 2, 3)


def test_node_history_figure():
    changes = pd.DataFrame(
        [
            {"step": s, "layer": 0, "head": 1, "kind": k, "rel_change": 0.1 * s}
            for s in (1, 2)
            for k in "qkvo"
        ]
    )
    fig = node_history_figure(
        np.array([0, 1, 2]), ["before", "1", "after"], np.ones(3), changes, node="a0.h1"
    )
    assert len(fig.data) == 5


def test_trends_are_judged_on_magnitude_and_flips_stand_apart():
    """m3->logits going from +3.2 to -2.5 becomes the strongest helper: it is a sign flip, not a
    "weakened" edge; an edge falling from -1 to -4 grows stronger; the colours are the Circuit
    page's compare legend."""
    from circuitviz.plotting import style as S
    from circuitviz.plotting.dynamics import trend_groups

    steps = np.array([0, 10, 20, 30])
    matrix = np.zeros((4, 4))
    matrix[:, 0] = [3.2, 1.0, -1.0, -2.5]  # flips sign
    matrix[:, 1] = [-1.0, -2.0, -3.0, -4.0]  # |score| grows: strengthened
    matrix[:, 2] = [2.0, 1.5, 1.0, 0.5]  # |score| falls: weakened
    matrix[:, 3] = [1.0, 1.1, 0.9, 1.0]  # no trend
    group, _, _ = trend_groups(matrix, steps)
    assert group.tolist() == [2, 0, 1, -1]
    fig = edge_trend_figure(steps, matrix, ["m3->logits", "e1", "e2", "e3"])
    by_name = {t.name.split()[0]: t for t in fig.data}
    assert by_name["m3->logits"].legendgroup == "flipped"
    assert by_name["e1"].legendgroup == "strengthened"
    assert by_name["e2"].legendgroup == "weakened"
    assert "e3" not in by_name
    for name, trace in by_name.items():
        assert trace.line.color == S.DIFF_COLORS[trace.legendgroup], name


def test_dynamics_figure_leads_with_accuracy_and_marks_the_step():
    steps = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]})
    evals = pd.DataFrame({"step": [0, 2], "accuracy": [0.1, 0.9], "task_metric": [0.0, 2.0]})
    fig = dynamics_figure([RunSeries(label="run", steps=steps, evals=evals)], cursor=2)
    first = fig.data[0]
    assert list(first.y) == [0.1, 0.9] and first.xaxis == "x"  # accuracy, top-left panel
    cursors = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == 2 and s.x1 == 2]
    panels = {t.xaxis for t in fig.data}
    assert {s.xref for s in cursors} == panels  # one in every panel that has data
