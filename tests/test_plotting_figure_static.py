"""The static (matplotlib) redraw of plotly figures: every trace of every Mechanisms and Heads
figure drawn with its own data, and written as SVG, PDF and PNG."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from matplotlib.image import AxesImage
from support.synthetic import write_analysed_run

from circuitviz.plotting.dynamics import (
    RunSeries,
    circuit_size_heatmap,
    dynamics_figure,
    edge_trend_figure,
    intrinsic_dimension_figure,
)
from circuitviz.plotting.figure_static import static_figure
from circuitviz.plotting.heads import head_heatmap_figure, param_change_figure
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.mechanisms import (
    alignment_lines,
    bias_figure,
    dla_lines,
    dla_matrix,
    faithfulness_lines,
    ov_figure,
    pattern_figure,
    role_lines,
)
from circuitviz.plotting.rundata import load_run_frames
from circuitviz.plotting.static import static_bytes
from circuitviz.runs import RunStore


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return RunStore([root]).open(write_analysed_run(root, seed=4))


@pytest.fixture(scope="module")
def analyses(run):
    table = run.analyses()
    rng = np.random.default_rng(0)  # and a bias analysis, as the gender task stores it
    bias = [
        {"step": step, "kind": "bias", "key": f"job{i}", "value": float(v)}
        for step in (0, 80)
        for i, v in enumerate(rng.uniform(0, 1 if step == 0 else 0.2, 30))
    ]
    return pd.concat([table, pd.DataFrame(bias)], ignore_index=True)


def figures(analyses):
    panels = {f"step {s}": dla_matrix(analyses, s, 3, 3) for s in (0, 80)}
    return {
        "dla heatmap": head_heatmap_figure(panels, colorbar_title="DLA", diverging=True),
        "dla lines": dla_lines(analyses),
        "roles": role_lines(analyses, "previous_token"),
        "pattern": pattern_figure(analyses, 80, "a0.h1"),
        "ov": ov_figure(analyses, "a2.h1"),
        "faithfulness": faithfulness_lines(analyses),
        "alignment": alignment_lines(analyses, "other"),
        "bias": bias_figure(analyses),
    }


def other_figures(run):
    """The Dynamics and Heads pages' figures, which the same files serve."""
    frames = load_run_frames(run)
    layout = layout_for(3, 3)
    steps = frames.snapshots["step"].to_numpy()
    series = [RunSeries(label="run", steps=frames.steps, evals=frames.evals)]
    sweep = pd.DataFrame(
        {"top_n": [10, 50, 200], "task_metric": [0.1, 0.5, 0.6], "lm_loss": [3.0, 3.1, 3.3]}
        | {"tuned_ratio": [0.1, 0.3, 0.6], "n_nodes": [4.0, 9.0, 15.0]}
    )
    changes = {"this run": frames.head_changes[frames.head_changes["step"] == 80]}
    return {
        "dynamics": dynamics_figure(series, cursor=40.0),
        "edge trends": edge_trend_figure(steps, frames.scores, layout.edge_names, min_r=0.0),
        "circuit size": circuit_size_heatmap([str(s) for s in steps], frames.scores),
        "intrinsic dimension": intrinsic_dimension_figure(sweep),
        "parameter change": param_change_figure(changes, 3, 3),
    }


FIGURES = ["dla heatmap", "dla lines", "roles", "pattern", "ov", "faithfulness", "alignment"]
FIGURES += ["bias", "dynamics", "edge trends", "circuit size", "intrinsic dimension"]
FIGURES += ["parameter change"]


@pytest.mark.parametrize("name", FIGURES)
def test_every_trace_is_drawn_with_its_data(run, analyses, name):
    fig = (figures(analyses) | other_figures(run))[name]
    out = static_figure(fig)
    lines = [line for ax in out.axes for line in ax.get_lines()]
    images = [im for ax in out.axes for im in ax.get_images() if isinstance(im, AxesImage)]
    drawn = 0
    for trace in fig.data:
        if trace.type == "scatter" and "lines" in trace.mode:
            x, y = np.asarray(trace.x, float), np.asarray(trace.y, float)
            assert any(
                np.array_equal(np.asarray(line.get_xdata(), float), x)
                and np.allclose(np.asarray(line.get_ydata(), float), y, equal_nan=True)
                for line in lines
            ), trace.name
            drawn += 1
        elif trace.type == "heatmap":
            z = np.asarray(trace.z, float)
            assert any(
                np.array_equal(np.ma.filled(im.get_array(), np.nan), z, equal_nan=True)
                for im in images
            )
            drawn += 1
        elif trace.type == "histogram":
            edges = np.arange(0, 1 + 0.025, 0.05)
            counts, _ = np.histogram(np.asarray(trace.x, float), edges)
            # matplotlib labels a histogram's first bar: its container holds the rest
            (bars,) = [
                [p.get_height() for p in container.patches]
                for ax in out.axes
                for container in ax.containers
                if container.patches[0].get_label() == trace.name
            ]
            assert list(bars) == counts.tolist()
            drawn += 1
    assert drawn == sum(t.type in ("heatmap", "histogram") or "lines" in t.mode for t in fig.data)
    assert drawn > 0
    texts = [t.get_text() for t in out.texts]
    if fig.layout.title.text:
        assert fig.layout.title.text in texts
    for note in fig.layout.annotations:  # subplot titles
        assert note.text in texts


@pytest.mark.parametrize(
    ("fmt", "magic"), [("svg", b"<?xml"), ("pdf", b"%PDF"), ("png", b"\x89PNG")]
)
def test_figures_are_written_as_files(analyses, fmt, magic):
    data = static_bytes(static_figure(figures(analyses)["ov"]), fmt)
    assert data.startswith(magic)


def test_an_unknown_trace_type_is_refused():
    with pytest.raises(ValueError, match="'pie'"):
        static_figure(go.Figure(go.Pie(values=[1, 2])))


def test_the_step_cursor_is_drawn_on_every_panel(run):
    fig = other_figures(run)["dynamics"]
    out = static_figure(fig)
    cursors = [
        line for ax in out.axes for line in ax.get_lines() if list(line.get_xdata()) == [40.0, 40.0]
    ]
    panels = {(t.xaxis, t.yaxis) for t in fig.data}
    assert len(cursors) == len(panels) > 1


def test_the_legend_lists_every_panels_traces_under_their_groups(run):
    frames = load_run_frames(run)
    layout = layout_for(3, 3)
    steps = frames.snapshots["step"].to_numpy()
    fig = edge_trend_figure(steps, frames.scores, layout.edge_names, min_r=0.0, n_show=4)
    (legend,) = static_figure(fig).legends
    texts = [t.get_text() for t in legend.get_texts()]
    names = [t.name for t in fig.data]
    groups = list(dict.fromkeys(t.legendgrouptitle.text for t in fig.data))
    assert [t for t in texts if t not in groups] == names  # every panel's lines, in order
    assert [t for t in texts if t in groups] == groups  # each group titled once


def test_an_empty_panel_keeps_its_note(run):
    frames = load_run_frames(run)
    steps = frames.snapshots["step"].to_numpy()
    fig = edge_trend_figure(steps, frames.scores, layout_for(3, 3).edge_names, min_r=0.999)
    notes = [n.text for n in fig.layout.annotations if str(n.xref).endswith("domain")]
    out = static_figure(fig)
    drawn = [t.get_text() for ax in out.axes for t in ax.texts]
    assert notes and all(note in drawn for note in notes)


def test_the_colour_bar_keeps_plotlys_tick_labels(run):
    frames = load_run_frames(run)
    fig = circuit_size_heatmap([str(s) for s in frames.snapshots["step"]], frames.scores)
    out = static_figure(fig)
    bar = out.axes[-1]  # the colour bar's own axes
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert labels and set(labels) <= {"1", "10", "100", "1k", "10k", "100k"}
    assert "1" in labels and "100" in labels  # log10 counts read as counts, not as 0 and 2
