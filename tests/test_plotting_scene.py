"""The backend-neutral scene: each rule against a slow, obviously correct oracle, and the plotly and
matplotlib renderers drawing exactly the scene's edges."""

import itertools

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex

from circuitviz.plotting import style as S
from circuitviz.plotting.circuit import circuit_figure
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.scene import (
    COLLAPSED_BAND,
    NodeValues,
    SceneOptions,
    build_scene,
    mix_white,
    on_paths_through,
)
from circuitviz.plotting.static import circuit_static_figure


@pytest.fixture(scope="module")
def layout():
    return layout_for(4, 4, 2)  # grouped-query attention: key/value bars are boxes too


@pytest.fixture(scope="module")
def scores(layout):
    rng = np.random.default_rng(0)
    values = rng.standard_normal(layout.n_edges) * rng.exponential(1, layout.n_edges)
    values[::17] = 0.0  # zero scores are never shown
    return values.astype(np.float32)


def shown_oracle(scores, threshold, top_n, within=None):
    """Loop over edges by decreasing |score| (ties: lower index first)."""
    keyed = sorted(range(len(scores)), key=lambda e: (-abs(float(scores[e])), e))
    out = []
    for e in keyed:
        s = abs(float(scores[e]))
        if s > 0 and s >= threshold and (within is None or within[e]):
            out.append(e)
    return out if top_n is None else out[:top_n]


@pytest.mark.parametrize(("threshold", "top_n"), [(0.0, 25), (0.5, None), (0.2, 7), (0.0, None)])
def test_drawn_edges_are_the_selection(layout, scores, threshold, top_n):
    scene = build_scene(layout, scores, options=SceneOptions(threshold=threshold, top_n=top_n))
    assert scene.edges.tolist() == shown_oracle(scores, threshold, top_n)
    grouped = sorted(e for group in scene.groups for e in group.edges.tolist())
    assert grouped == sorted(scene.edges.tolist())  # every drawn edge in exactly one group


def test_only_the_runs_circuit(layout, scores):
    selected = np.zeros(layout.n_edges, bool)
    selected[::5] = True
    scene = build_scene(layout, scores, selected, SceneOptions(top_n=9, only_selected=True))
    assert scene.edges.tolist() == shown_oracle(scores, 0.0, 9, within=selected)
    with pytest.raises(ValueError, match="only_selected"):
        build_scene(layout, scores, options=SceneOptions(only_selected=True))


def test_groups_are_drawn_weakest_first_with_widths_by_strength(layout, scores):
    scene = build_scene(layout, scores, options=SceneOptions(top_n=60))
    widths = [group.width for group in scene.groups]
    assert widths == sorted(widths)
    strongest = scene.edges[0]
    top_group = next(g for g in scene.groups if strongest in g.edges)
    assert top_group.width == max(widths)
    colors = {g.color for g in scene.groups}
    assert colors <= {S.HELPS, S.HURTS}
    for group in scene.groups:
        signs = np.sign(scores[group.edges])
        assert (signs < 0).all() if group.color == S.HELPS else (signs > 0).all()


def paths_oracle(layout, edges, node) -> set[int]:
    """Edges on some path through ``node``: edge s -> d is on one when d leads to ``node`` or
    ``node`` leads to s, each checked by its own depth-first search (key/value bars feed their
    query heads)."""
    succ: dict[int, set[int]] = {}
    for e in edges.tolist():
        succ.setdefault(int(layout.edge_src_node[e]), set()).add(int(layout.edge_dst_node[e]))
    group = layout.n_heads // layout.n_kv_heads
    index = layout.node_index()
    for b, kind in enumerate(layout.node_kind):
        if kind == "kv":
            layer, g = int(layout.node_layer[b]), int(layout.node_head[b])
            succ.setdefault(b, set()).update(
                index[f"a{layer}.h{g * group + k}"] for k in range(group)
            )

    def reaches(a, b) -> bool:
        stack, seen = [a], set()
        while stack:
            at = stack.pop()
            if at == b:
                return True
            if at not in seen:
                seen.add(at)
                stack.extend(succ.get(at, ()))
        return False

    return {
        e
        for e in edges.tolist()
        if reaches(int(layout.edge_dst_node[e]), node)
        or reaches(node, int(layout.edge_src_node[e]))
    }


@pytest.mark.parametrize("box", ["a1.h2", "m2", "a2.kv1", "input"])
def test_focus_keeps_the_paths_through_the_box(layout, scores, box):
    options = SceneOptions(top_n=40, highlight=box, focus=True)
    scene = build_scene(layout, scores, options=options)
    shown = build_scene(layout, scores, options=SceneOptions(top_n=40)).edges
    node = layout.node_index()[box]
    assert set(scene.edges.tolist()) == paths_oracle(layout, shown, node)
    mask = on_paths_through(layout, shown, node)
    assert set(shown[mask].tolist()) == set(scene.edges.tolist())


def test_highlight_fades_the_other_edges(layout, scores):
    scene = build_scene(layout, scores, options=SceneOptions(top_n=50, highlight="a1.h1"))
    faded = [g for g in scene.groups if g.color == S.FADED]
    node = layout.node_index()["a1.h1"]
    touching = layout.edges_of_node(node)[scene.edges]
    assert sum(len(g.edges) for g in faded) == int((~touching).sum())
    with pytest.raises(ValueError, match="nearest is 'a3.h3'"):
        build_scene(layout, scores, options=SceneOptions(highlight="a9.h9"))


def test_box_fill_follows_attribution(layout, scores):
    scene = build_scene(layout, scores, options=SceneOptions(top_n=30))
    edges = scene.edges
    mass = np.zeros(layout.n_nodes)
    for e in edges.tolist():  # the oracle: a plain loop
        mass[layout.edge_src_node[e]] += abs(float(scores[e]))
        mass[layout.edge_dst_node[e]] += abs(float(scores[e]))
    assert np.allclose(scene.node_mass, mass)
    idle = mass == 0
    assert all(scene.node_fill[n] == S.IDLE_FILL for n in np.flatnonzero(idle))
    top = int(mass.argmax())
    kind = layout.node_kind[top]
    full = {"head": S.HEAD_FILL, "mlp": S.MLP_FILL, "kv": S.KV_FILL}.get(kind, S.END_FILL)
    assert scene.node_fill[top] == full  # the busiest box gets its kind's full colour

    def lightness(color):
        return sum(int(color[i : i + 2], 16) for i in (1, 3, 5))

    heads = [n for n in range(layout.n_nodes) if layout.node_kind[n] == "head" and mass[n] > 0]
    for a, b in itertools.combinations(heads, 2):
        if mass[a] > mass[b]:
            assert lightness(scene.node_fill[a]) <= lightness(scene.node_fill[b])
    assert mix_white("#000000", 0.5) == "#808080" and mix_white("#102030", 1.0) == "#102030"


def test_empty_layers_collapse(layout, scores):
    # Only edges between layer 0 and the logits: layers 1-3 hold no drawn box.
    only = np.zeros(layout.n_edges, np.float32)
    names = layout.edge_names
    keep = [e for e, name in enumerate(names) if name.startswith("a0.") and name.endswith("logits")]
    only[keep] = 1.0
    flat = build_scene(layout, only, options=SceneOptions())
    folded = build_scene(layout, only, options=SceneOptions(collapse=True))
    assert np.array_equal(flat.band_out, flat.band_in)
    heights = np.diff(folded.band_out)
    assert heights[1] == 1.0  # layer 0 (after the input band) keeps its height
    assert np.allclose(heights[2:5], COLLAPSED_BAND)  # layers 1, 2, 3 fold
    low, high = folded.y_range()
    assert high - low < flat.y_range()[1] - flat.y_range()[0] - 2
    ticks, labels = folded.layer_ticks()
    assert labels == ["layer 0"]


def test_compare_draws_the_union_classified(layout, scores):
    rng = np.random.default_rng(1)
    other = (scores + rng.standard_normal(layout.n_edges)).astype(np.float32)
    scene = build_scene(layout, scores, options=SceneOptions(top_n=20), compare=other)
    union = set(shown_oracle(other, 0, 20)) | set(shown_oracle(scores, 0, 20))
    assert set(scene.edges.tolist()) == union
    legend = {entry.label for entry in scene.legend}
    assert S.DIFF_LABELS["added"] in legend and S.DIFF_LABELS["removed"] in legend


def drawn_edges_plotly(fig, scene) -> list[tuple]:
    """First and last point of every edge curve in the figure's edge traces."""
    out = []
    labels = {g.label for g in scene.groups}
    for trace in fig.data:
        if trace.mode != "lines" or trace.name not in labels or trace.x is None:
            continue
        x, y = np.asarray(trace.x, float), np.asarray(trace.y, float)
        for piece in np.split(np.arange(len(x)), np.flatnonzero(np.isnan(x))):
            piece = piece[~np.isnan(x[piece])]
            if len(piece):
                out.append(tuple(np.round([x[piece[0]], y[piece[0]], x[piece[-1]]], 4)))
    return sorted(out)


def test_both_renderers_draw_the_scene(layout, scores):
    options = SceneOptions(top_n=35, color_by="target", collapse=True, highlight="m1")
    scene = build_scene(layout, scores, options=options)
    curves = scene.curves(scene.edges)
    want = sorted(tuple(np.round([c[0, 0], c[0, 1], c[-1, 0]], 4)) for c in curves)
    assert drawn_edges_plotly(circuit_figure(scene), scene) == want
    fig = circuit_static_figure(scene, title="t")
    segments = [
        seg
        for c in fig.axes[0].collections
        if isinstance(c, LineCollection)
        for seg in c.get_segments()
    ]
    got = sorted(tuple(np.round([s[0, 0], s[0, 1], s[-1, 0]], 4)) for s in segments)
    assert got == want


def test_options_are_validated():
    for bad, match in [
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"top_n": -2}, "top_n"),
        ({"color_by": "rainbow"}, "color_by"),
        ({"noise_k": 0}, "noise_k"),
    ]:
        with pytest.raises(ValueError, match=match):
            SceneOptions(**bad)


# ---- boxes coloured by an analysis -------------------------------------------------------------


def value_fill_oracle(mode, value, scale, sqrt):
    """One box's fill, written out the long way: hue by sign (DLA) or purple (a role), strength
    ``|value| / scale`` (square-rooted for DLA) rounded to fifths, mixed with white."""
    if np.isnan(value):
        return S.NO_VALUE_FILL
    ratio = min(abs(float(value)) / scale, 1.0) ** (0.5 if sqrt else 1.0)
    level = int(ratio * 5 + 0.5) / 5  # halves round up
    if mode == "dla":
        hue = S.HELPS if value > 0 else S.HURTS
    else:
        hue, level = S.ROLE_FILL, (level if value > 0 else 0.0)
    rgb = [int(hue[i : i + 2], 16) for i in (1, 3, 5)]
    mixed = [int(np.floor(255 - (255 - c) * level + 0.5)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


@pytest.fixture(scope="module")
def dla_values(layout):
    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, layout.n_nodes)).astype(np.float32)
    kinds = np.asarray(layout.node_kind)
    values[:, (kinds == "kv") | (kinds == "logits")] = np.nan  # DLA has no value there
    values[1, 3] = 0.0
    scale = float(np.nanmax(np.abs(values)))
    return NodeValues(
        mode="dla", steps=np.array([0, 40, 80]), values=values, scale=scale, sqrt=True
    )


@pytest.mark.parametrize(("step", "row"), [(0, 0), (39, 0), (40, 1), (79.5, 1), (200, 2)])
def test_boxes_take_the_latest_analysed_step(layout, scores, dla_values, step, row):
    scene = build_scene(
        layout, scores, options=SceneOptions(top_n=20), node_values=dla_values, step=step
    )
    assert scene.node_value_step == int(dla_values.steps[row])
    values = dla_values.values[row]
    want = [value_fill_oracle("dla", v, dla_values.scale, True) for v in values.tolist()]
    assert list(scene.node_fill) == want
    at, strongest = np.unravel_index(
        np.nanargmax(np.abs(dla_values.values)), dla_values.values.shape
    )
    if row == at:  # the run's largest |DLA| gets the full colour of its sign
        assert scene.node_fill[strongest] in (S.HELPS.lower(), S.HURTS.lower())
    if row == 1:
        assert scene.node_fill[3] == "#ffffff"  # zero DLA is white
    labels = [entry.label for entry in scene.legend if entry.kind == "fill"]
    full = f"{dla_values.scale:.3g}"  # three significant digits
    assert labels == [
        f"box DLA > 0 (step {scene.node_value_step})",
        f"box DLA < 0 (full colour at ±{float(full):.{max(0, 2 - int(np.floor(np.log10(dla_values.scale))))}f})",
    ]
    assert (
        scene.edges.tolist()
        == build_scene(layout, scores, options=SceneOptions(top_n=20)).edges.tolist()
    )


def test_role_colours_are_shares_of_attention(layout, scores):
    values = np.full((1, layout.n_nodes), np.nan, np.float32)
    heads = [n for n, kind in enumerate(layout.node_kind) if kind == "head"]
    values[0, heads] = np.linspace(-0.1, 1.2, len(heads))
    roles = NodeValues(mode="induction", steps=np.array([0]), values=values, scale=1.0, sqrt=False)
    scene = build_scene(layout, scores, node_values=roles, step=10)
    for n in range(layout.n_nodes):
        assert scene.node_fill[n] == value_fill_oracle("induction", values[0, n], 1.0, False)
    assert scene.node_fill[heads[-1]] == S.ROLE_FILL.lower()  # 1.2 is capped at full colour
    assert scene.node_fill[heads[0]] == "#ffffff"  # a negative score is no role
    assert scene.label_colors[heads[-1]] == "#ffffff"  # white text on the dark purple
    assert scene.label_colors[heads[0]] == "#333333"
    (legend,) = [entry.label for entry in scene.legend if entry.kind == "fill"]
    assert legend == "box induction score (step 0; full colour at 1.00)"


def test_node_values_are_validated(layout):
    good = {"steps": np.array([0]), "values": np.zeros((1, layout.n_nodes), np.float32)}
    with pytest.raises(ValueError, match="no box colouring"):
        NodeValues(mode="rainbow", scale=1.0, sqrt=False, **good)
    with pytest.raises(ValueError, match="scale"):
        NodeValues(mode="dla", scale=0.0, sqrt=True, **good)
    short = NodeValues(
        mode="dla", steps=np.array([0]), values=np.zeros((1, 3), np.float32), scale=1.0, sqrt=True
    )
    with pytest.raises(ValueError, match="one column per box"):
        build_scene(layout, np.zeros(layout.n_edges), node_values=short)


def test_both_renderers_draw_the_box_colours(layout, scores, dla_values):
    scene = build_scene(
        layout, scores, options=SceneOptions(top_n=20), node_values=dla_values, step=80
    )
    fig = circuit_figure(scene)
    fills = {trace.fillcolor for trace in fig.data if trace.fill == "toself"}
    assert fills == set(scene.node_fill)
    legend = {trace.name for trace in fig.data if trace.showlegend}
    assert "box DLA > 0 (step 80)" in legend
    assert any(name.startswith("box DLA < 0 (full colour at ±") for name in legend)
    hover = next(trace for trace in fig.data if trace.name == "nodes").hovertext
    n = int(np.nanargmax(np.abs(dla_values.values[2])))
    assert f"DLA {dla_values.values[2, n]:+.4g} at step 80" in hover[n]
    static = circuit_static_figure(scene, title="t")
    got = {to_hex(patch.get_facecolor()) for patch in static.axes[0].patches}
    assert set(scene.node_fill) <= got
    texts = [t.get_text() for t in static.legends[0].get_texts()]
    assert "box DLA > 0 (step 80)" in texts
    assert any(text.startswith("box DLA < 0 (full colour at") for text in texts)
