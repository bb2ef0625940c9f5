"""Browser-free figures: the matplotlib circuit matches the plotly one; files are what they say."""

import io

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from PIL import Image

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.edges import select_edges
from circuitviz.plotting.layout import build_layout
from circuitviz.plotting.scene import SceneOptions, build_scene
from circuitviz.plotting.static import (
    circuit_static_figure as draw,
)
from circuitviz.plotting.static import (
    gif_bytes,
    save_static,
    static_bytes,
)


def circuit_static_figure(layout, scores, selected=None, *, compare=None, title=None, **options):
    """The matplotlib figure of one view (the scene's options as keywords)."""
    scene = build_scene(layout, scores, selected, SceneOptions(**options), compare=compare)
    return draw(scene, title=title)


@pytest.fixture(scope="module")
def layout():
    return build_layout(build_graph(2, 3))


@pytest.fixture(scope="module")
def scores(layout):
    return np.random.default_rng(0).standard_normal(layout.n_edges)


def test_draws_the_same_edges_as_the_selection(layout, scores):
    fig = circuit_static_figure(layout, scores, top_n=17, title="t")
    segments = [
        seg
        for c in fig.axes[0].collections
        if isinstance(c, LineCollection)
        for seg in c.get_segments()
    ]
    assert len(segments) == 17

    def key(curve):
        return tuple(round(float(v), 4) for v in (*curve[0], *curve[-1]))

    expected = sorted(key(layout.edge_curves[e]) for e in select_edges(scores, top_n=17))
    assert sorted(key(seg) for seg in segments) == expected


@pytest.mark.parametrize(
    ("fmt", "magic"), [("svg", b"<?xml"), ("pdf", b"%PDF"), ("png", b"\x89PNG")]
)
def test_static_formats(layout, scores, fmt, magic, tmp_path):
    fig = circuit_static_figure(layout, scores, top_n=10, compare=scores[::-1].copy())
    assert static_bytes(fig, fmt).startswith(magic)
    path = save_static(fig, tmp_path / f"c.{fmt}")
    assert path.read_bytes().startswith(magic)
    with pytest.raises(ValueError, match="format"):
        save_static(fig, tmp_path / "c.bmp")


def test_gif_has_one_frame_per_figure(layout, scores):
    frames = [circuit_static_figure(layout, scores * (1 + i), top_n=5 + i) for i in range(3)]
    image = Image.open(io.BytesIO(gif_bytes(frames, seconds_per_frame=0.5)))
    assert image.format == "GIF"
    assert image.n_frames == 3
    with pytest.raises(ValueError, match="at least one frame"):
        gif_bytes([])
