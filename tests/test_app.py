"""An AppTest for every dashboard page, on runs written by the run store into a temporary root:
finished runs, a run still being written, a run with no snapshot yet, a damaged run, a missing one.

The Circuit page's graph is drawn in the browser from one payload; here the payload is decoded and
the edges the browser draws are computed with the scene the browser's renderer is tested against
(tests/test_browser.py). A view the browser reports is simulated by setting the component's state.
"""

import base64
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from support.synthetic import write_synthetic_analyses, write_synthetic_run

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.rundata import load_run_frames, view_scenes
from circuitviz.plotting.web import decode, view_dict
from circuitviz.runs import RunStore, RunWriter

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
GRAPH = build_graph(3, 4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = {"n_steps": 80, "graph": GRAPH, "snapshot_every": 20, "task": "sv-disagreement"}
    write_synthetic_run(root, run_id="svd-circuit", noise_floor=True, **common)
    write_synthetic_run(root, run_id="svd-full", method="full", seed=1, **common)
    write_synthetic_analyses(root / "svd-circuit", GRAPH, against="svd-full")
    # snapshots every 30 steps, analyses at 0, 40 and 80: the two cadences do not line up
    uneven = {**common, "snapshot_every": 30, "task": "sv-agreement"}
    write_synthetic_run(root, run_id="svd-uneven", seed=2, **uneven)
    write_synthetic_analyses(root / "svd-uneven", GRAPH, against="svd-full")
    live = _live_run(root, "svd-live")  # its writer stays open: a process is writing it
    _two_task_run(root, "gender-two-tasks")
    _tuned_task_run(root, "svd-tracks")
    _empty_run(root, "svd-empty")
    _sweep(root)
    broken = root / "svd-broken"
    broken.mkdir()
    (broken / "run.sqlite").write_bytes(b"this is not a database" * 100)
    yield root
    live.close()


def _graph_meta():
    return {
        "n_layers": GRAPH.n_layers,
        "n_heads": GRAPH.n_heads,
        "n_kv_heads": GRAPH.n_kv_heads,
        "paper": False,
        "edge_names": GRAPH.edge_names(),
        "n_model_params": 1000,
    }


def _live_run(root, run_id):
    """A run halfway through: a "before" and one "during" circuit, no "after", status running."""
    writer = _empty_run(root, run_id, close=False)
    rng = np.random.default_rng(3)
    for step, label in ((0, "before"), (1, "during")):
        scores = rng.standard_normal(GRAPH.n_edges).astype(np.float32)
        writer.add_snapshot(step, label, "sv-disagreement", scores, np.abs(scores) > 1.5)
    return writer


def _two_task_run(root, run_id):
    """A run that stored circuits for two tasks at the same steps (e.g. de-biasing, which watches
    the task it unlearns and the one it must keep)."""
    writer = _empty_run(root, run_id, close=False, task="gender-pronoun")
    rng = np.random.default_rng(4)
    for task in ("gender-pronoun", "sv-agreement"):
        for step, label in ((0, "before"), (5, "after")):
            scores = rng.standard_normal(GRAPH.n_edges).astype(np.float32)
            writer.add_snapshot(step, label, task, scores, np.abs(scores) > 1.5)
    writer.set_status("finished")
    writer.close()


def _tuned_task_run(root, run_id):
    """As the demo's sv-disagreement runs store it: "before" is the original task's circuit
    (sv-agreement) on the untouched model; the tuned task's own circuits start at step 0."""
    writer = _empty_run(root, run_id, close=False, method="random")  # not the default run
    rng = np.random.default_rng(5)
    rows = [(0, "before", "sv-agreement"), (0, "during", "sv-disagreement")]
    rows += [(40, "during", "sv-disagreement"), (80, "after", "sv-disagreement")]
    for step, label, task in rows:
        scores = rng.standard_normal(GRAPH.n_edges).astype(np.float32)
        writer.add_snapshot(step, label, task, scores, np.abs(scores) > 1.5)
    writer.set_status("finished")
    writer.close()


def _empty_run(root, run_id, *, close=True, task="sv-disagreement", method="circuit"):
    """A run that has started but stored no circuit yet."""
    writer = RunWriter.create(
        root,
        run_id,
        config={"n_steps": 50},
        model_spec="synthetic",
        task=task,
        method=method,
        seed=0,
        graph_meta=_graph_meta(),
    )
    writer.log_step(
        1,
        loss=2.0,
        lr=1e-3,
        top_n=10,
        n_nodes=4,
        n_edges=10,
        tuned_params_whole=10,
        tuned_params_exact=5,
        tuned_ratio=0.01,
        discovered=True,
    )
    writer.set_status("running")
    if close:
        writer.close()
    return writer


def _sweep(root):
    rng = np.random.default_rng(0)
    for top_n in (5, 20, 80):
        writer = RunWriter.create(
            root,
            f"sweep-{top_n}",
            kind="tune",
            config={"top_n": top_n, "n_steps": 2},
            model_spec="synthetic",
            task="sv-disagreement",
            method="circuit",
            seed=0,
            graph_meta=_graph_meta(),
            sweep_id="sweep-A",
        )
        scores = rng.standard_normal(GRAPH.n_edges).astype(np.float32)
        writer.add_snapshot(0, "before", "sv-disagreement", scores, np.abs(scores) > 1)
        for step in (1, 2):
            writer.log_step(
                step,
                loss=1.0 / step,
                lr=1e-3,
                top_n=top_n,
                n_nodes=top_n // 2,
                n_edges=top_n,
                tuned_params_whole=top_n,
                tuned_params_exact=top_n,
                tuned_ratio=top_n / 100,
                discovered=True,
            )
        writer.log_eval(2, accuracy=0.5, task_metric=np.log(top_n), lm_loss=3.0)
        writer.set_status("finished")
        writer.close()


@pytest.fixture
def app(root, monkeypatch):
    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(root))

    def make(page: str | None = None, **query) -> AppTest:
        at = AppTest.from_file(MAIN, default_timeout=60)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        if page is not None:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return make


def charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array) -> list:
    """A figure array from a chart spec: plain JSON, or plotly's base64 typed array."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def graph_payload(at) -> tuple[dict, dict]:
    """(header, arrays) of the Circuit page's graph."""
    (element,) = at.get("bidi_component")
    return decode(element.proto.bytes)


def shown_edges(at) -> list[str]:
    """The edges the browser draws for the page's current view (the last panel when side by
    side), strongest first."""
    view = at.session_state["cv_view"]
    root = RunStore.default().roots[0]
    frames = load_run_frames(RunStore([root]).open(view.run), task=view.task)
    layout = layout_for(*frames.graph_shape[:3], paper=frames.graph_shape[3])
    scene, _ = view_scenes(frames, layout, view)[-1]
    return [layout.edge_names[e] for e in scene.edges.tolist()]


SEQ = itertools.count(1)


def report(at, **changes) -> AppTest:
    """What the browser sends once the user pauses: its whole view, numbered."""
    view = at.session_state["cv_view"]
    sent = {**view_dict(view), "run": view.run, **changes, "seq": next(SEQ)}
    at.session_state["circuit"] = {"view": sent}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    parts = [
        e.value
        for kind in ("error", "warning", "info", "caption", "markdown")
        for e in at.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


# ---- Circuit -----------------------------------------------------------------------------------


def test_first_screen_shows_a_circuit_and_puts_the_view_in_the_url(app):
    at = app()
    header, arrays = graph_payload(at)  # the graph is on the first screen
    assert at.query_params["run"] == "svd-circuit"  # the sv-disagreement circuit run is preferred
    assert at.query_params["step"] == "after"
    assert len(shown_edges(at)) == 100
    assert header["run"]["tokens"] == ["before", "20", "40", "60", "after"]
    n_edges = GRAPH.n_edges
    assert arrays["scores"].size == 5 * n_edges  # every snapshot goes to the browser once


def test_view_from_the_url(app):
    at = app(run="svd-circuit", step="before", top_n="7", node="a1.h0")
    assert len(shown_edges(at)) == 7
    header, _ = graph_payload(at)
    assert (header["view"]["step"], header["view"]["node"]) == ("before", "a1.h0")
    assert header["view"]["top_n"] == 7


def test_moving_the_step_slider_redraws_and_updates_the_url(app):
    at = app(run="svd-circuit", step="before", top_n="30")
    before = shown_edges(at)
    sent = at.get("bidi_component")[0].proto.bytes
    report(at, step="after")
    assert at.query_params["step"] == "after"
    after = shown_edges(at)
    assert before != after and len(after) == 30
    # The browser already drew it: the server sends the same payload, so nothing is resent.
    assert at.get("bidi_component")[0].proto.bytes == sent


def test_threshold_and_top_n_sliders(app):
    at = app(run="svd-circuit", top_n="50")
    report(at, top_n=12)
    assert len(shown_edges(at)) == 12
    assert at.query_params["top_n"] == "12"
    header, arrays = graph_payload(at)
    top = float(np.abs(np.nan_to_num(load_scores(at))).max())
    report(at, threshold=top * 0.999)
    assert len(shown_edges(at)) <= 2
    report(at, top_n=None)
    assert at.query_params["top_n"] == "all"


def load_scores(at) -> np.ndarray:
    view = at.session_state["cv_view"]
    frames = load_run_frames(RunStore([RunStore.default().roots[0]]).open(view.run))
    return frames.scores


def test_compare_two_steps(app):
    at = app(run="svd-circuit", top_n="40")
    report(at, compare="before")
    assert at.query_params["compare"] == "before"
    view = at.session_state["cv_view"]
    root = RunStore.default().roots[0]
    frames = load_run_frames(RunStore([root]).open(view.run))
    layout = layout_for(*frames.graph_shape[:3])
    ((scene, title),) = view_scenes(frames, layout, view)
    assert scene.diff is not None and 0 <= scene.diff.edge_iou < 1  # before vs after differ
    legend = {entry.label for entry in scene.legend}
    assert "unchanged" in legend or "added (only in B)" in legend
    assert graph_payload(at)[0]["run"]["has_noise"]  # the browser greys noise-floor changes
    report(at, compare_mode="side")
    assert at.query_params["compare_mode"] == "side"
    assert len(view_scenes(frames, layout, at.session_state["cv_view"])) == 2


def test_a_report_about_another_run_or_with_bad_values_changes_nothing(app):
    at = app(run="svd-circuit", top_n="40")
    report(at, run="svd-full", step="before")  # a late report from the run shown before
    assert at.query_params.get("step") == "after"
    report(at, top_n=-5)
    assert at.query_params["top_n"] == "40"


def test_a_link_to_a_box_the_graph_lacks_names_the_nearest(app):
    """?node=a9.h9 on a 3 x 4 graph: a warning with the value and the nearest box, no traceback."""
    at = app(run="svd-circuit", node="a9.h9")
    warning = " ".join(w.value for w in at.warning)
    assert "`a9.h9`" in warning and "the nearest is a2.h3" in warning
    assert at.session_state["cv_view"].node is None
    assert graph_payload(at)


def test_a_link_to_a_step_the_run_lacks_names_the_nearest(app):
    """?step=12345 used to become "after" silently: now a warning names both."""
    at = app(run="svd-circuit", step="12345")
    warning = " ".join(w.value for w in at.warning)
    assert "`12345`" in warning and "the nearest, after (step 80)" in warning
    assert at.query_params["step"] == "after"
    at = app(run="svd-circuit", step="45")
    assert "step 40" in " ".join(w.value for w in at.warning)
    assert at.query_params["step"] == "40"


@pytest.mark.parametrize(
    "bad", ["../svd-circuit", "/etc", "svd-circuit/../svd-full", "**bold** <b>x</b> $x$ :smile:"]
)
def test_run_links_open_only_listed_runs_and_say_so_plainly(app, root, bad):
    """?run= takes run ids inside the runs directory only; the message shows no server path, no
    list of every run, and the id as plain text (every markdown character escaped)."""
    at = app(run=bad)
    message = " ".join(e.value for e in at.error).replace("\u200b", "")  # (keeps icons out)
    assert "was not found" in message
    assert str(root) not in message and "svd-full" not in message.replace(bad, "")
    if "<b>" in bad:  # shown inside a code span, where no markup applies
        assert f"`{bad}`" in message
    assert not at.get("bidi_component")


def test_a_run_whose_process_is_gone_shows_stopped(app, root):
    """A run recorded as running that no process writes any more (stopped from the Run page, or
    killed) is shown as stopped, in the sidebar and on the page."""
    at = app(run="svd-empty")
    labels = at.sidebar.selectbox[0].options
    assert any(label.startswith("svd-empty") and "stopped" in label for label in labels)
    assert "stopped" in texts(at)


def test_runs_are_labelled_by_id_method_n_and_k(app):
    at = app()
    labels = at.sidebar.selectbox[0].options
    assert len(set(labels)) == len(labels)  # every run told apart
    assert any(label.startswith("sweep-20 · circuit · N=20") for label in labels)
    assert any(label.startswith("svd-full · full") for label in labels)


def test_missing_run_is_a_clear_message(app):
    at = app(run="no-such-run")
    assert "was not found" in texts(at)
    assert not charts(at)


def test_corrupt_run_is_a_clear_message(app):
    at = app(run="svd-broken")
    assert "cannot be read" in texts(at)
    assert not charts(at)


def test_run_still_being_written_renders(app):
    at = app(run="svd-live")
    header, _ = graph_payload(at)
    assert "still being written" in texts(at)
    assert header["run"]["token_labels"] == ["before", "step 1"]
    assert header["view"]["step"] is None  # follows the newest circuit: the "during" view


def test_run_with_circuits_of_two_tasks(app):
    at = app(run="gender-two-tasks", top_n="20")
    picker = at.radio(key="w_task")
    assert picker.options == ["gender-pronoun", "sv-agreement"]
    assert graph_payload(at)[0]["run"]["token_labels"] == ["before", "after (step 5)"]
    first = shown_edges(at)
    picker.set_value("sv-agreement").run()
    assert at.query_params["task"] == "sv-agreement"
    assert shown_edges(at) != first


def test_run_without_snapshots_says_so(app):
    at = app(run="svd-empty")
    assert "has not stored a circuit yet" in texts(at)


def test_bad_url_parameter_is_reported_not_fatal(app):
    at = app(run="svd-circuit", top_n="lots", step="middle")
    assert graph_payload(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "top_n" in warnings and "step" in warnings


# ---- Dynamics, Heads, Export, Run, Tour ----------------------------------------------------------


def test_dynamics_page(app):
    at = app("dynamics", run="svd-circuit")
    specs = charts(at)
    assert len(specs) == 4  # curves, edge trends, circuit-size map, sweep curve
    assert {t.get("name") for t in specs[0]["data"]} == {
        next(iter({t.get("name") for t in specs[0]["data"]}))
    }
    at.multiselect(key="w_overlay").select("svd-full").run()
    assert len({t.get("line", {}).get("color") for t in charts(at)[0]["data"]}) == 2
    assert at.query_params["overlay"] == "svd-full"
    sweep = charts(at)[3]["data"][0]
    assert values(sweep["x"]) == [5, 20, 80]


def test_heads_page_compares_with_full_fine_tuning(app):
    at = app("heads", run="svd-circuit")
    specs = charts(at)
    assert len(specs) == 2
    assert len(specs[1]["data"]) == 8  # circuit and full, W_Q/K/V/O each
    assert at.selectbox[0].value == "svd-full"


def test_mechanisms_page_shows_what_analyse_stored(app):
    at = app("mechanisms", run="svd-circuit")
    specs = charts(at)
    # DLA heatmaps, DLA lines, role lines, attention heatmaps, one head's pattern, OV,
    # faithfulness, CPR/CMD, overlap
    assert len(specs) == 9
    first, last = (_grid(trace["z"]) for trace in specs[0]["data"])
    assert first[2, 1] == 1.0 and last[2, 1] == -1.0  # a2.h1 flipped sign
    names = [trace["name"] for trace in specs[1]["data"]]
    assert names[0] == "a2.h1" and "model's logit difference" in names
    roles = {t["name"]: values(t["y"]) for t in specs[2]["data"]}
    assert roles == {"a0.h0": [0.9, 0.9, 0.1], "a1.h2": [0.1, 0.1, 0.9]}  # the role moved
    attention = [_grid(t["z"]) for t in specs[3]["data"]]
    assert attention[0][0, 1] == pytest.approx(0.1) and attention[1][0, 1] == pytest.approx(0.3)
    assert at.selectbox(key="mech_ov_head").value == "a2.h1"  # the head turned toward the answer
    (pattern,) = specs[4]["data"]
    assert pattern["x"] == ["0 The", "1 keys", "2 are"]
    assert np.isnan(_grid(pattern["z"])[0, 2])  # above the diagonal: not attended
    assert _grid(pattern["z"])[2, 0] == pytest.approx(1 / 3)
    at.selectbox(key="mech_pattern_head").set_value("a0.h1").run()
    assert _grid(charts(at)[4]["data"][0]["z"])[2, 1] == pytest.approx(0.7)  # the last step
    at.select_slider(key="mech_pattern_step").set_value(0).run()
    assert _grid(charts(at)[4]["data"][0]["z"])[2, 1] == pytest.approx(0.9)
    specs = charts(at)
    path, cos = specs[5]["data"]
    assert values(path["x"]) == [0.0, 10.0, 20.0] and values(cos["y"]) == [0.9, 0.9]
    faith = {t["name"]: values(t["y"]) for t in specs[6]["data"]}
    assert faith["the initial circuit, 1% of edges"] == pytest.approx([0.5, 0.3, 0.1])
    areas = {t["name"]: values(t["y"]) for t in specs[7]["data"]}
    assert areas["CPR, the initial circuit"] == pytest.approx([0.8, 0.7, 0.6])
    assert areas["CMD, the initial circuit"][1] is None  # undefined there: a gap, not 0
    assert len(specs[8]["data"]) == 2 and values(specs[8]["data"][0]["x"]) == [0, 20, 40, 60, 80]
    at.select_slider(key="mech_step").set_value(40).run()
    assert _grid(charts(at)[0]["data"][1]["z"])[2, 1] == 0.0
    # the attention panels follow the shared step too (a0.h1 pays 0.2 at step 40)
    assert _grid(charts(at)[3]["data"][1]["z"])[0, 1] == pytest.approx(0.2)
    at.radio(key="mech_ov_kind").set_value("qk").run()
    qk_path = charts(at)[5]["data"][0]
    assert values(qk_path["x"]) == [0.0, -10.0, -20.0]  # a2.h1's QK trajectory
    at.radio(key="mech_role").set_value("induction").run()
    assert len(charts(at)[2]["data"]) == 1  # one head holds it (all tie at chance)
    csv, html = at.get("download_button")[:2]
    assert "analyses" in csv.proto.label.lower() and "html" in html.proto.label.lower()


def _grid(z) -> np.ndarray:
    """A heatmap's z from a chart spec, as a 2-D array."""
    if isinstance(z, dict):
        shape = [int(n) for n in str(z["shape"]).split(",")]
        return np.asarray(values(z), dtype=float).reshape(shape)
    return np.asarray(z, dtype=float)


def test_mechanisms_page_on_a_run_never_analysed(app):
    at = app("mechanisms", run="svd-full")
    assert "has not been analysed yet" in texts(at)
    assert "circuitviz analyse svd-full" in texts(at)
    assert not charts(at)


def test_heads_page_on_a_damaged_run(app):
    at = app("heads", run="svd-broken")
    assert "cannot be read" in texts(at)


def test_export_page(app):
    at = app("export", run="svd-circuit", step="before", top_n="9")
    downloads = at.get("download_button")
    assert len(downloads) == 8  # 7 files and, new, the whole run as an offline player
    assert "top 9" in texts(at)
    gif = next(b for b in at.button if b.label == "Make the GIF")
    gif.click().run()
    assert not at.exception
    assert len(at.get("download_button")) == 9, "the GIF is offered for download"
    assert at.get("image"), "the GIF is shown"


def test_export_page_without_snapshots(app):
    at = app("export", run="svd-empty")
    assert "nothing to export" in texts(at)


def test_run_page_lists_commands(app):
    at = app("run")
    assert not at.exception
    if at.get("form"):
        assert at.text_input[0].value == "demo"
    assert "Start a run" in " ".join(h.value for h in at.subheader)


def tour_button(at, label):
    return next(b for b in at.button if b.label == label)


def test_tour_page(app):
    at = app("tour", run="svd-circuit")
    titles = []
    for _ in range(6):  # six steps, one at a time, with Next
        assert len([b for b in at.button if b.label == "Show me"]) == 1
        titles.append(next(m.value for m in at.markdown if m.value.startswith("####")))
        if len(titles) < 6:
            tour_button(at, "Next").click().run()
    assert len(set(titles)) == 6 and tour_button(at, "Next").disabled
    tour_button(at, "Back").click().run()
    assert next(m.value for m in at.markdown if m.value.startswith("####")) == titles[4]
    tour_button(at, "Show me").click().run()  # step 5 opens the Mechanisms page on the run
    assert not at.exception and len(charts(at)) == 9
    at.switch_page("views/tour.py").run()
    for _ in range(4):
        tour_button(at, "Back").click().run()
    assert tour_button(at, "Back").disabled
    tour_button(at, "Show me").click().run()
    assert not at.exception
    assert at.query_params.get("step") == "before"


@pytest.mark.parametrize(("run", "first"), [("svd-circuit", "before"), ("svd-tracks", "0")])
def test_tour_step_four_compares_before_with_after(app, run, first):
    """The tour's scrubbing step used to compare "after" with "after" (IoU 1.00): on a run whose
    "before" belongs to the original task, "before" was not a step of the shown task and silently
    became "after". It now compares the shown task's first circuit with its last."""
    at = app("tour", run=run)
    for _ in range(3):
        tour_button(at, "Next").click().run()
    tour_button(at, "Show me").click().run()
    assert not at.exception
    assert (at.query_params["compare"], at.query_params["step"]) == (first, "after")
    header, _ = graph_payload(at)
    assert (header["view"]["compare"], header["view"]["step"]) == (first, "after")
    view = at.session_state["cv_view"]
    frames = load_run_frames(RunStore([RunStore.default().roots[0]]).open(view.run))
    layout = layout_for(*frames.graph_shape[:3])
    ((scene, _),) = view_scenes(frames, layout, view)
    assert scene.diff.edge_iou < 1.0


# ---- the `circuitviz app` command (the browser test starts the real server through it) ----------


def test_app_command_refuses_bad_arguments(tmp_path, capsys):
    from circuitviz.cli import main

    assert main(["app", "--port", "70000", "--no-browser"]) == 2
    assert "--port" in capsys.readouterr().err
    a_file = tmp_path / "runs.txt"
    a_file.write_text("")
    assert main(["app", "--runs-dir", str(a_file), "--no-browser"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_mechanisms_page_draws_the_bias_distribution(app, root):
    """A gender run's prejudice risk per occupation, before and after, as overlaid histograms."""
    from circuitviz.runs import RunWriter as Writer

    writer = Writer.resume(root / "gender-two-tasks")
    writer.add_analysis(0, "bias", {f"job{i}": 0.5 + 0.02 * i for i in range(10)})
    writer.add_analysis(5, "bias", {f"job{i}": 0.01 * i for i in range(10)})
    writer.set_status("finished")
    writer.close()
    at = app("mechanisms", run="gender-two-tasks")
    (spec,) = charts(at)
    before, after = spec["data"]
    assert before["type"] == after["type"] == "histogram"
    assert values(after["x"]) == pytest.approx([0.01 * i for i in range(10)])
    assert "mean 0.59" in before["name"] and "mean 0.05" in after["name"]


def test_mechanisms_page_exports_each_figure_as_a_file(app):
    """Every figure of the page can be saved as SVG, PDF or PNG (drawn when the button is
    clicked, by ``plotting.figure_static``), named after the run and the figure."""
    at = app("mechanisms", run="svd-circuit")
    chooser = at.selectbox(key="mech_export_figure")
    assert len(chooser.options) == 9 and chooser.value == "DLA per head, step 0 and 80"
    at.selectbox(key="mech_export_figure").set_value("faithfulness over steps").run()
    buttons = at.get("download_button")[2:]
    assert [b.proto.label.split()[0] for b in buttons] == ["SVG", "PDF", "PNG"]
    assert all(b.proto.deferred_file_id for b in buttons)  # made on click, not on every rerun


def test_the_mechanisms_step_is_the_circuit_pages_step(app):
    """One step for both pages: the Circuit page's step opens the Mechanisms slider at the latest
    analysed step at or before it, and moving the slider moves the view (and the URL)."""
    at = app("mechanisms", run="svd-circuit", step="60")
    assert at.select_slider(key="mech_step").value == 40  # analysed at 0, 40 and 80
    at.select_slider(key="mech_step").set_value(0).run()
    assert at.session_state["cv_view"].step == "before"  # the snapshot at step 0
    assert at.query_params["step"] == "before"


def test_dynamics_and_heads_figures_are_files_too(app):
    at = app("dynamics", run="svd-circuit")
    options = at.selectbox(key="dyn_export_figure").options
    assert options[:3] == ["metrics against step", "edge trends", "circuit size"]
    at = app("heads", run="svd-circuit")
    assert at.selectbox(key="heads_export_figure").options == [
        "attribution per head at after (step 80)",
        "parameter change per head",
    ]
    buttons = at.get("download_button")
    assert [b.proto.label.split()[0] for b in buttons] == ["SVG", "PDF", "PNG"]


def test_the_mechanisms_slider_keeps_a_checkpoint_between_snapshots(app):
    """Snapshots at 0, 30, 60, 80 and checkpoints at 0, 40, 80: choosing 40 shows 40 here (and
    step 30, the nearest snapshot, on the Circuit page), and stays at 40."""
    at = app("mechanisms", run="svd-uneven")
    at.select_slider(key="mech_step").set_value(40).run()
    assert at.select_slider(key="mech_step").value == 40
    assert at.session_state["cv_view"].step == "30"
    at.run()  # any other rerun keeps it
    assert at.select_slider(key="mech_step").value == 40


def test_the_tour_starts_from_boxes_coloured_by_kind(app):
    """Step 1 explains the boxes' kind colours, so it shows them even after boxes: DLA."""
    at = app("tour", run="svd-circuit", node_color="dla")
    tour_button(at, "Show me").click().run()
    assert at.session_state["cv_view"].node_color == "kind"
