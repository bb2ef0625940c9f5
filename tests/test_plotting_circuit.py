"""The interactive circuit figure: the right edges, batched into few traces, with hover text."""

import json

import numpy as np
import plotly.io as pio
import pytest

from circuitviz.graph.topology import build_graph
from circuitviz.plotting import style as S
from circuitviz.plotting.circuit import circuit_figure as draw
from circuitviz.plotting.edges import select_edges
from circuitviz.plotting.layout import N_CURVE_POINTS, build_layout
from circuitviz.plotting.scene import SceneOptions, build_scene


def circuit_figure(layout, scores, selected=None, *, compare=None, **options):
    """The figure of one view (the scene's options as keywords)."""
    return draw(build_scene(layout, scores, selected, SceneOptions(**options), compare=compare))


def circuit_view(layout, scores, selected=None, *, compare=None, **options):
    return build_scene(layout, scores, selected, SceneOptions(**options), compare=compare)


@pytest.fixture(scope="module")
def layout():
    return build_layout(build_graph(3, 4))


@pytest.fixture(scope="module")
def scores(layout):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(layout.n_edges) * rng.exponential(1, layout.n_edges)).astype(
        np.float32
    )


BOX_OUTLINES = {"trained by the run's circuit", "selected"}


def edge_traces(fig):
    """Line traces that draw edges (not box outlines, not legend-only entries)."""
    return [
        t
        for t in fig.data
        if t.mode == "lines"
        and t.fill is None
        and t.name not in BOX_OUTLINES
        and t.x is not None
        and len(t.x) > 1
    ]


def drawn_curves(fig, layout) -> list[tuple[float, float]]:
    """Start points of every curve drawn by the edge traces (boxes are excluded: they are
    closed 5-point outlines, curves have N_CURVE_POINTS points)."""
    starts = []
    for trace in edge_traces(fig):
        x, y = np.asarray(trace.x, float), np.asarray(trace.y, float)
        pieces = np.split(np.arange(len(x)), np.flatnonzero(np.isnan(x)))
        for piece in pieces:
            piece = piece[~np.isnan(x[piece])]
            if len(piece) == N_CURVE_POINTS:
                starts.append(
                    (round(x[piece[0]], 4), round(y[piece[0]], 4), round(x[piece[-1]], 4))
                )
    return starts


def test_draws_exactly_the_selected_edges(layout, scores):
    fig = circuit_figure(layout, scores, top_n=25)
    expected = select_edges(scores, top_n=25)
    curves = layout.edge_curves[expected]
    want = sorted(
        (round(float(c[0, 0]), 4), round(float(c[0, 1]), 4), round(float(c[-1, 0]), 4))
        for c in curves
    )
    assert sorted(drawn_curves(fig, layout)) == want


def test_edges_are_batched_into_few_traces():
    layout = build_layout(build_graph(12, 12))
    rng = np.random.default_rng(1)
    scores = rng.standard_normal(layout.n_edges)
    fig = circuit_figure(layout, scores, top_n=2000)
    assert len(fig.data) < 60  # never one trace per edge (nor per box)
    hover = next(t for t in fig.data if t.name == "edges")
    assert len(hover.hovertext) == 2000


def test_hover_names_score_and_rank(layout, scores):
    fig = circuit_figure(layout, scores, top_n=5)
    hover = next(t for t in fig.data if t.name == "edges")
    best = select_edges(scores, top_n=1)[0]
    src, dst = layout.edge_names[best].split("->")
    assert f"{src} → {dst}" in hover.hovertext[0]
    assert f"rank 1 of {layout.n_edges}" in hover.hovertext[0]
    assert f"{scores[best]:+.4g}" in hover.hovertext[0]
    nodes = next(t for t in fig.data if t.name == "nodes")
    assert list(nodes.customdata) == list(layout.node_names)


def test_sign_colours_follow_the_sign_convention(layout, scores):
    fig = circuit_figure(layout, scores, top_n=40)
    helps = [t for t in edge_traces(fig) if t.line.color == S.HELPS]
    hurts = [t for t in edge_traces(fig) if t.line.color == S.HURTS]
    assert helps and hurts
    shown = select_edges(scores, top_n=40)
    n_helps = sum(np.isnan(np.asarray(t.x, float)).sum() for t in helps)
    assert n_helps == int((scores[shown] < 0).sum())


def test_highlight_fades_edges_not_touching_the_box(layout, scores):
    fig = circuit_figure(layout, scores, top_n=60, highlight="a1.h2")
    faded = [t for t in edge_traces(fig) if t.line.color == S.FADED]
    coloured = [t for t in edge_traces(fig) if t.line.color != S.FADED]
    touching = layout.edges_of_node(layout.node_index()["a1.h2"])[select_edges(scores, top_n=60)]
    n_coloured = sum(np.isnan(np.asarray(t.x, float)).sum() for t in coloured)
    assert n_coloured == touching.sum()
    assert faded
    with pytest.raises(ValueError, match="not a box"):
        circuit_figure(layout, scores, highlight="a9.h9")


def test_compare_colours_the_diff(layout, scores):
    rng = np.random.default_rng(2)
    other = scores + rng.standard_normal(len(scores)).astype(np.float32)
    fig = circuit_figure(layout, scores, compare=other, top_n=30)
    legend = {t.name for t in fig.data if t.showlegend}
    assert S.DIFF_LABELS["added"] in legend and S.DIFF_LABELS["removed"] in legend
    view = circuit_view(layout, scores, compare=other, top_n=30)
    assert len(drawn_curves(fig, layout)) == len(view.diff.edges)


def test_selected_mask_outlines_circuit_boxes(layout, scores):
    selected = np.zeros(layout.n_edges, bool)
    selected[select_edges(scores, top_n=3)] = True
    fig = circuit_figure(layout, scores, selected, top_n=10)
    outline = [t for t in fig.data if t.name == "trained by the run's circuit"]
    assert len(outline) == 1
    only = circuit_figure(layout, scores, selected, top_n=10, only_selected=True)
    assert len(drawn_curves(only, layout)) == 3


def test_wrong_length_scores_are_refused_clearly(layout):
    with pytest.raises(ValueError, match="one entry per valid edge"):
        circuit_figure(layout, np.zeros(7))


def test_figure_serialises_to_json(layout, scores):
    spec = json.loads(pio.to_json(circuit_figure(layout, scores, top_n=50, color_by="target")))
    assert spec["layout"]["xaxis"]["range"] == list(layout.x_range())
    with pytest.raises(ValueError, match="color_by"):
        circuit_figure(layout, scores, color_by="rainbow")
