"""Runs whose graph splits every MLP into neuron groups (``--mlp-groups``): the layout draws each
MLP as a strip of group cells, and every page renders such a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from support.synthetic import write_synthetic_run

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.rundata import load_run_frames, view_scenes
from circuitviz.plotting.view import ViewState
from circuitviz.plotting.web import decode
from circuitviz.runs import RunStore

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
GROUPS = 4


def test_the_mlp_is_a_strip_of_group_cells_every_edge_enters_its_own_cell():
    layout = layout_for(3, 4, 2, mlp_groups=GROUPS)
    index = layout.node_index()
    assert "m0" not in index
    cells = [index[f"m1.g{j}"] for j in range(GROUPS)]
    xs = layout.node_x[cells]
    assert np.all(np.diff(xs) > 0)  # left to right
    assert np.allclose(layout.node_w[cells], layout.node_w[cells][0])
    left, right = xs[0] - layout.node_w[cells[0]] / 2, xs[-1] + layout.node_w[cells[-1]] / 2
    assert right - left == pytest.approx(0.8)  # the strip fills one MLP box's width
    for e, name in enumerate(layout.edge_names):
        src, dst = name.split("->")
        if ".g" in dst:
            assert layout.node_names[layout.edge_dst_node[e]] == dst
        if ".g" in src:
            assert layout.node_names[layout.edge_src_node[e]] == src
    whole = layout_for(3, 4, 2)
    assert layout.n_edges > whole.n_edges and layout.key[-1] == GROUPS


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    graph = build_graph(3, 4, 2, mlp_groups=GROUPS)
    write_synthetic_run(
        root, run_id="grouped", graph=graph, n_steps=40, snapshot_every=20, task="sv-disagreement"
    )
    return root


def test_a_grouped_run_scenes_and_pages(root, monkeypatch):
    frames = load_run_frames(RunStore([root]).open("grouped"))
    assert frames.mlp_groups == GROUPS
    layout = layout_for(*frames.graph_shape[:3], mlp_groups=frames.mlp_groups)
    ((scene, _),) = view_scenes(frames, layout, ViewState(run="grouped", top_n=50))
    assert len(scene.edges) == 50
    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(root))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["run"] = "grouped"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    header, _ = decode(at.get("bidi_component")[0].proto.bytes)
    assert "m2.g3" in str(header)
    for page in ("dynamics", "heads", "export"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
