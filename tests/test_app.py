"""An AppTest for every dashboard page, on runs written by the run store into a temporary root:
finished runs, a run still being written, a run with no snapshot yet, a damaged run, a missing one.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from circuitviz.graph.topology import build_graph
from circuitviz.runs import RunWriter
from circuitviz.runs.synthetic import write_synthetic_run

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
GRAPH = build_graph(3, 4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = {"n_steps": 80, "graph": GRAPH, "snapshot_every": 20, "task": "sv-disagreement"}
    write_synthetic_run(root, run_id="svd-circuit", noise_floor=True, **common)
    write_synthetic_run(root, run_id="svd-full", method="full", seed=1, **common)
    _live_run(root, "svd-live")
    _two_task_run(root, "gender-two-tasks")
    _empty_run(root, "svd-empty")
    _sweep(root)
    broken = root / "svd-broken"
    broken.mkdir()
    (broken / "run.sqlite").write_bytes(b"this is not a database" * 100)
    return root


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
    writer.close()


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


def _empty_run(root, run_id, *, close=True, task="sv-disagreement"):
    """A run that has started but stored no circuit yet."""
    writer = RunWriter.create(
        root,
        run_id,
        config={"n_steps": 50},
        model_spec="synthetic",
        task=task,
        method="circuit",
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


def shown_edges(spec: dict) -> list[str]:
    hover = next(t for t in spec["data"] if t.get("name") == "edges")
    return [text.split("<br>")[0] for text in hover.get("hovertext", [])]


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
    assert charts(at), "no circuit on the first screen"
    assert at.query_params["run"] == "svd-circuit"  # the sv-disagreement circuit run is preferred
    assert at.query_params["step"] == "after"
    assert len(shown_edges(charts(at)[0])) == 100


def test_view_from_the_url(app):
    at = app(run="svd-circuit", step="before", top_n="7", node="a1.h0")
    assert len(shown_edges(charts(at)[0])) == 7
    assert at.select_slider(key="w_step").value == "before"
    assert at.selectbox(key="w_node").value == "a1.h0"
    assert len(charts(at)) == 2  # the circuit and the selected box's history
    assert at.dataframe, "the selected box's edges are listed"


def test_moving_the_step_slider_redraws_and_updates_the_url(app):
    at = app(run="svd-circuit", step="before", top_n="30")
    before = shown_edges(charts(at)[0])
    at.select_slider(key="w_step").set_value("after").run()
    assert at.query_params["step"] == "after"
    after = shown_edges(charts(at)[0])
    assert before != after and len(after) == 30


def test_threshold_and_top_n_sliders(app):
    at = app(run="svd-circuit", top_n="50")
    at.slider(key="w_top_n").set_value(12).run()
    assert len(shown_edges(charts(at)[0])) == 12
    assert at.query_params["top_n"] == "12"
    top = at.slider(key="w_threshold").max
    at.slider(key="w_threshold").set_value(top * 0.999).run()
    assert len(shown_edges(charts(at)[0])) <= 2


def test_compare_two_steps(app):
    at = app(run="svd-circuit", top_n="40")
    at.toggle(key="w_comparing").set_value(True).run()
    assert at.query_params["compare"] == "before"
    labels = {m.label for m in at.metric}
    assert {"edge IoU", "node IoU", "added", "removed"} <= labels
    legend = {t.get("name") for t in charts(at)[0]["data"] if t.get("showlegend")}
    assert "unchanged" in legend or "added (only in B)" in legend
    assert "noise floor" in texts(at)
    at.radio(key="w_compare_mode").set_value("side").run()
    assert len(charts(at)) == 2


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
    assert charts(at)
    assert "still being written" in texts(at)
    assert at.select_slider(key="w_step").options == ["before", "step 1"]
    assert at.select_slider(key="w_step").value == "1"  # the newest circuit: the "during" view


def test_run_with_circuits_of_two_tasks(app):
    at = app(run="gender-two-tasks", top_n="20")
    picker = at.radio(key="w_task")
    assert picker.options == ["gender-pronoun", "sv-agreement"]
    assert at.select_slider(key="w_step").options == ["before", "after (step 5)"]
    first = shown_edges(charts(at)[0])
    picker.set_value("sv-agreement").run()
    assert at.query_params["task"] == "sv-agreement"
    assert shown_edges(charts(at)[0]) != first


def test_run_without_snapshots_says_so(app):
    at = app(run="svd-empty")
    assert "has not stored a circuit yet" in texts(at)


def test_bad_url_parameter_is_reported_not_fatal(app):
    at = app(run="svd-circuit", top_n="lots", step="middle")
    assert charts(at)
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


def test_heads_page_on_a_damaged_run(app):
    at = app("heads", run="svd-broken")
    assert "cannot be read" in texts(at)


def test_export_page(app):
    at = app("export", run="svd-circuit", step="before", top_n="9")
    downloads = at.get("download_button")
    assert len(downloads) == 7
    assert "top 9" in texts(at)
    gif = next(b for b in at.button if b.label == "Make the GIF")
    gif.click().run()
    assert not at.exception
    assert len(at.get("download_button")) == 8, "the GIF is offered for download"
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


def test_tour_page(app):
    at = app("tour", run="svd-circuit")
    assert len([b for b in at.button if b.label == "Show me"]) == 5
    next(b for b in at.button if b.label == "Show me").click().run()
    assert not at.exception
    assert at.query_params.get("step") == "before"


# ---- the `circuitviz app` command (the browser test starts the real server through it) ----------


def test_app_command_refuses_bad_arguments(tmp_path, capsys):
    from circuitviz.cli import main

    assert main(["app", "--port", "70000", "--no-browser"]) == 2
    assert "--port" in capsys.readouterr().err
    a_file = tmp_path / "runs.txt"
    a_file.write_text("")
    assert main(["app", "--runs-dir", str(a_file), "--no-browser"]) == 2
    assert "is a file" in capsys.readouterr().err
