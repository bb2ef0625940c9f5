"""End to end: ``circuitviz app`` serves the real dashboard, Debian's Chromium (driven by playwright,
never a downloaded browser) opens it, and the graph is scrubbed, clicked and compared in the page.

What the browser draws is checked against the Python scene (``circuitviz.plotting.scene``), the
oracle of the browser renderer; the websocket is watched to show that scrubbing never asks the
server. Screenshots land in ``test-artifacts/`` (``benchmarks/screenshots.py`` makes the README's).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support.synthetic import write_synthetic_analyses, write_synthetic_run

from circuitviz.graph.topology import build_graph
from circuitviz.plotting.layout import layout_for
from circuitviz.plotting.rundata import load_run_frames, view_scenes
from circuitviz.plotting.view import ViewState
from circuitviz.runs import RunStore, RunWriter

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ENTRY = "import sys; from circuitviz.cli import main; sys.exit(main())"
RENDERER = "window.__circuitviz && window.__circuitviz.main"
# The renderer's state as the page shows it: drawn edges, step, render counter.
GRAPH_STATE = """() => {
  const root = document.querySelector('.cvz');
  if (!root || !window.__circuitviz || !window.__circuitviz.main) return null;
  const s = window.__circuitviz.main.state;
  return {count: Number(root.dataset.renderCount), step: root.dataset.step,
          shown: Number(root.dataset.shown), run: s.m.run.id, view: s.view};
}"""
# The scene of a view, computed by the page's renderer exactly as it draws it.
PAGE_SCENE = """(view) => {
  const s = window.__circuitviz.main.scene(view);
  return {edges: Array.from(s.edges),
          groups: s.groups.map(g => [Array.from(g.edges), g.color, g.width, g.opacity, g.label, g.dash]),
          legend: s.legend.map(l => l.label), fills: s.fills, bands: Array.from(s.bandOut),
          iou: s.diff ? [s.diff.edgeIou, s.diff.nodeIou] : null};
}"""
# Page pixel position of a box's centre, through the renderer's own frame.
BOX_CENTRE = """(name) => {
  const s = window.__circuitviz.main.state, g = s.m.g, n = s.m.nodeIndex.get(name);
  const p = s.drawn[s.drawn.length - 1], rect = s.dom.canvas.getBoundingClientRect();
  const yTop = g.node_y[n] + g.node_h[n] / 2, yBot = g.node_y[n] - g.node_h[n] / 2;
  return [rect.left + p.x0 + p.frame.sx(g.node_x[n]),
          rect.top + (p.frame.sy(yTop) + p.frame.sy(yBot)) / 2];
}"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


GRAPH = build_graph(4, 4, 2)  # grouped-query attention: key/value bars are drawn
DEEP = build_graph(30, 9, 3)  # SmolLM2-135M's shape


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(
        root, run_id="svd-circuit", n_steps=80, graph=GRAPH, snapshot_every=20, noise_floor=True
    )
    write_synthetic_run(root, run_id="deep", n_steps=40, graph=DEEP, snapshot_every=20, seed=3)
    write_synthetic_analyses(root / "svd-circuit", GRAPH, against="deep")
    return root


@pytest.fixture(scope="module")
def live_run(root):
    """A run being written by this test process while the browser watches it."""
    graph_meta = {
        "n_layers": GRAPH.n_layers,
        "n_heads": GRAPH.n_heads,
        "n_kv_heads": GRAPH.n_kv_heads,
        "paper": False,
        "edge_names": GRAPH.edge_names(),
        "n_model_params": 1000,
    }
    writer = RunWriter.create(
        root,
        "svd-live",
        config={"n_steps": 100},
        model_spec="synthetic",
        task="sv-disagreement",
        method="circuit",
        seed=0,
        graph_meta=graph_meta,
    )
    writer.set_status("running")
    scores = np.random.default_rng(0).standard_normal(GRAPH.n_edges).astype(np.float32)
    writer.add_snapshot(0, "before", "sv-disagreement", scores, np.abs(scores) > 1.5)
    yield writer
    writer.set_status("stopped")
    writer.close()


def start_server(root, log_path, *extra):
    port = free_port()
    log = open(log_path, "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "app", "--port", str(port), "--runs-dir", str(root)]
        + ["--no-browser", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return process, url, log
        except OSError:
            time.sleep(0.3)
    log.seek(0)
    os.killpg(process.pid, 15)
    pytest.fail(f"the dashboard did not start within 60 s:\n{log.read()}")


def stop_server(process, log):
    os.killpg(process.pid, 15)
    process.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    process, url, log = start_server(root, tmp_path_factory.mktemp("log") / "server.log")
    log.seek(0)
    assert f"circuitviz dashboard: {url}" in log.read()  # the command prints the URL
    yield url
    stop_server(process, log)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
        "(apt-get install chromium, or ./run.sh setup as root)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def wait_for(page, script, *, differs_from=None, timeout_s=30.0, arg=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script, arg)
        if value and value != differs_from:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for the page ({script[:60]}...)")


def open_graph(browser, url, *, width=1400, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    state = wait_for(page, GRAPH_STATE)
    wait_for(page, f"() => {RENDERER}.ready()")  # every snapshot sorted
    return page, state, errors


def sent_frames(page) -> list[float]:
    """Times of every websocket frame the page sends from now on."""
    frames: list[float] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: frames.append(time.monotonic())))
    return frames


def python_scene(root, view: ViewState):
    frames = load_run_frames(RunStore([root]).open(view.run))
    layout = layout_for(*frames.graph_shape[:3], paper=frames.graph_shape[3])
    return view_scenes(frames, layout, view), layout


def test_scrubbing_redraws_in_the_browser_without_the_server(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    frames: list[float] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: frames.append(time.monotonic())))
    page.goto(f"{server}/?run=svd-circuit&step=before&top_n=60")
    before = wait_for(page, GRAPH_STATE)
    wait_for(page, f"() => {RENDERER}.ready()")
    assert before["shown"] == 60 and before["step"] == "before"
    page.screenshot(path=str(ARTIFACTS / "browser-circuit-before.png"))
    time.sleep(1.5)  # let the page settle: no report is pending
    slider = page.locator(".cvz-step")
    slider.focus()
    sent_before = len(frames)
    pressed = time.monotonic()
    page.keyboard.press("ArrowRight")
    after = wait_for(page, GRAPH_STATE, differs_from=before)
    assert after["step"] == "20" and after["shown"] == 60
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    back = wait_for(page, GRAPH_STATE)
    assert back["count"] >= before["count"] + 3 and back["step"] == "20"  # each key redrew
    # No websocket message for any of the three moves: the redraws came from the browser alone.
    assert [t for t in frames[sent_before:] if t < pressed + 0.3] == []
    # Once the user pauses, one report: the URL follows, so a reload reopens the same view.
    page.wait_for_url(re.compile(r"step=20"), timeout=15_000)
    assert 1 <= len(frames) - sent_before <= 3
    time.sleep(0.5)
    page.screenshot(path=str(ARTIFACTS / "browser-circuit-step20.png"))
    assert (ARTIFACTS / "browser-circuit-step20.png").stat().st_size > 10_000
    page.reload()
    again = wait_for(page, GRAPH_STATE)
    assert again["step"] == "20" and again["shown"] == 60
    page.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"top_n": 60},
        {"top_n": 15, "color_by": "target", "step": "before"},
        {"top_n": 30, "compare": "before"},
        {"top_n": 30, "node": "a1.h2"},
        {"top_n": 30, "node": "a2.kv1", "focus": True, "collapse": True},
        {"top_n": None, "threshold": 0.05, "only_circuit": True},
        {"top_n": 2000},
        {"top_n": 30, "node_color": "dla", "step": "60"},
        {"top_n": 30, "node_color": "previous_token", "compare": "before"},
        {"top_n": 10, "node_color": "induction", "step": "before", "collapse": True},
    ],
)
def test_the_browser_draws_the_python_scene(server, browser, root, changes):
    """The oracle: for each view the page's renderer computes exactly ``scene.build_scene``'s
    edges, groups (colour, width, opacity, dash), legend, box fills and collapsed bands."""
    page, _, errors = open_graph(browser, f"{server}/?run=svd-circuit")
    got = page.evaluate(PAGE_SCENE, changes)
    view = ViewState(run="svd-circuit", step="after").with_(**changes)
    ((scene, _),), layout = python_scene(root, view.with_(compare_mode="overlay"))
    assert got["edges"] == scene.edges.tolist()
    want = [[g.edges.tolist(), g.color, g.width, g.opacity, g.label, g.dash] for g in scene.groups]
    assert [g[:2] + [round(g[2], 9)] + g[3:] for g in got["groups"]] == [
        g[:2] + [round(g[2], 9)] + g[3:] for g in want
    ]
    assert got["legend"] == [entry.label for entry in scene.legend]
    assert got["fills"] == list(scene.node_fill)
    np.testing.assert_allclose(got["bands"], scene.band_out)
    if scene.diff is not None:
        np.testing.assert_allclose(got["iou"], [scene.diff.edge_iou, scene.diff.node_iou])
    points = page.evaluate(f"() => Array.from({{length: 300}}, (_, e) => {RENDERER}.points(e))")
    np.testing.assert_allclose(
        np.array(points).reshape(300, -1, 2), layout.edge_curves[:300], atol=1e-5
    )
    assert errors == []
    page.close()


def test_boxes_coloured_by_dla_follow_the_step_and_the_url(server, browser, root):
    """The box-colour menu offers the run's analyses; DLA fills follow the step slider (the
    latest analysed step at or before it) and the choice reaches the URL."""
    page, _, errors = open_graph(browser, f"{server}/?run=svd-circuit&step=20&top_n=30")
    menu = page.locator(".cvz-node-color")
    options = menu.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert options == ["kind", "dla", "previous_token", "induction"]
    menu.select_option("dla")
    page.wait_for_url(re.compile(r"node_color=dla"), timeout=15_000)
    legend = page.locator(".cvz-legend").inner_text()
    assert "box DLA > 0 (step 0)" in legend
    drawn = page.evaluate("() => window.__circuitviz.main.state.drawn[0].scene.fills")
    ((scene, _),), _ = python_scene(
        root, ViewState(run="svd-circuit", step="20", top_n=30, node_color="dla")
    )
    assert drawn == list(scene.node_fill)
    page.locator(".cvz-step").focus()
    page.keyboard.press("ArrowRight")  # step 40: the next analysed step
    page.wait_for_function(
        "() => document.querySelector('.cvz-legend').innerText.includes('(step 40)')",
        timeout=5_000,
    )
    # side by side, the legend names each panel's analysed step
    page.evaluate(f"() => {RENDERER}.setView({{compare: 'before', compare_mode: 'side'}})")
    page.wait_for_function(
        "() => document.querySelector('.cvz-legend').innerText.includes('(steps 0 | 40)')",
        timeout=5_000,
    )
    assert errors == []
    page.close()


def test_clicking_a_box_shows_its_details_at_once(server, browser):
    page, state, _ = open_graph(browser, f"{server}/?run=svd-circuit&step=before&top_n=60")
    x, y = page.evaluate(BOX_CENTRE, "a1.h2")
    page.mouse.click(x, y)
    page.get_by_text("a1.h2 owns its rows of W_Q").wait_for(timeout=5_000)
    assert page.locator(".cvz-details tr").count() == 13  # a header and its 12 strongest edges
    page.wait_for_url(re.compile(r"node=a1\.h2"), timeout=15_000)  # and the URL follows
    page.locator(".cvz-focus").check()
    focused = wait_for(page, GRAPH_STATE, differs_from=None)
    assert focused["view"]["focus"] is True
    page.close()


def test_hovering_an_edge_names_it_with_its_score_and_rank(server, browser, root):
    page, _, _ = open_graph(browser, f"{server}/?run=svd-circuit&step=after&top_n=10")
    x, y = page.evaluate(
        """() => { const s = window.__circuitviz.main.state, p = s.drawn[0], e = p.scene.edges[0];
          const P = s.m.style.curve_points, off = e * P * 2 + (P / 2 - 1) * 2;
          const rect = s.dom.canvas.getBoundingClientRect();
          return [rect.left + p.frame.sx((s.m.points[off] + s.m.points[off + 2]) / 2),
                  rect.top + p.frame.sy((s.m.points[off + 1] + s.m.points[off + 3]) / 2)]; }"""
    )
    page.mouse.move(x, y)
    tip = page.locator(".cvz-tip")
    tip.wait_for(state="visible", timeout=5_000)
    name, score, rank = tip.inner_text().splitlines()
    ((scene, _),), layout = python_scene(root, ViewState(run="svd-circuit", step="after", top_n=10))
    e = layout.edge_names.index(name.replace(" → ", "->"))
    assert e in scene.edges.tolist()  # a drawn edge
    assert float(score.split()[1]) == pytest.approx(float(scene.scores[e]), rel=1e-3)
    assert rank == f"rank {scene.ranks[e]} of {layout.n_edges}"
    page.close()


def test_the_strip_gives_the_steps_numbers(server, browser, root):
    """Above the graph: accuracy, task metric and held-out loss of the step shown (the latest
    evaluation at or before it), following the slider."""
    page, _, _ = open_graph(browser, f"{server}/?run=svd-circuit&step=40&top_n=20")
    evals = RunStore([root]).open("svd-circuit").evals()
    row = evals[evals["step"] <= 40].iloc[-1]
    strip = page.locator(".cvz-strip").inner_text()
    assert f"{float(f'{row.accuracy:.3g}'):g} accuracy" in strip
    assert f"{float(f'{row.lm_loss:.4g}'):g} held-out LM loss" in strip
    page.locator(".cvz-step").focus()
    page.keyboard.press("ArrowRight")
    row = evals[evals["step"] <= 60].iloc[-1]
    page.wait_for_function(
        "(text) => document.querySelector('.cvz-strip').innerText.includes(text)",
        arg=f"{float(f'{row.accuracy:.3g}'):g} accuracy",
        timeout=5_000,
    )
    page.close()


def test_compare_side_by_side_shares_one_frame(server, browser):
    page, _, _ = open_graph(
        browser, f"{server}/?run=svd-circuit&compare=before&compare_mode=side&top_n=40"
    )
    frames = page.evaluate(
        """() => window.__circuitviz.main.state.drawn.map(p => ({
             x0: p.x0, width: p.width, kx: p.frame.kx, ky: p.frame.ky, y0: p.frame.sy(0)}))"""
    )
    assert len(frames) == 2
    a, b = frames
    assert a["width"] == b["width"] and a["kx"] == b["kx"] and a["ky"] == b["ky"]
    assert a["y0"] == b["y0"]
    summary = page.locator(".cvz-summary").inner_text()
    assert "edge IoU" in summary and "noise floor" in summary
    page.close()


def test_the_thirty_layer_graph_fits_the_window(server, browser):
    """SmolLM2's shape: input and logits both on screen, key/value groups drawn, no scrolling."""
    page, state, errors = open_graph(browser, f"{server}/?run=deep&top_n=300", height=900)
    settled = "() => document.querySelector('.cvz-canvas').getBoundingClientRect().bottom <= 900"
    wait_for(page, settled, timeout_s=10)  # the graph fits itself to the window as the page settles
    bounds = page.evaluate(
        """() => { const s = window.__circuitviz.main.state, g = s.m.g, p = s.drawn[0];
          const rect = s.dom.canvas.getBoundingClientRect();
          const at = (name) => { const n = s.m.nodeIndex.get(name);
            return [rect.top + p.frame.sy(g.node_y[n] + g.node_h[n] / 2),
                    rect.top + p.frame.sy(g.node_y[n] - g.node_h[n] / 2)]; };
          return {input: at('input'), logits: at('logits'), bottom: rect.bottom,
                  kv: g.node_kind.filter(k => k === 'kv').length}; }"""
    )
    assert bounds["logits"][0] > 0 and bounds["input"][1] < 900
    assert bounds["bottom"] <= 900
    assert bounds["kv"] == 30 * 3
    assert state["shown"] == 300 and errors == []
    page.screenshot(path=str(ARTIFACTS / "browser-30-layers.png"))
    page.close()


def test_presentation_mode_fits_a_projector(server, browser):
    """1280 x 720: the whole graph above the fold, the legend clear of the title."""
    page, _, errors = open_graph(
        browser, f"{server}/?run=deep&presentation=1&top_n=200", width=1280, height=720
    )
    settled = "() => document.querySelector('.cvz-canvas').getBoundingClientRect().bottom <= 720"
    wait_for(page, settled, timeout_s=10)
    boxes = page.evaluate(
        """() => { const r = (sel) => { const b = document.querySelector(sel).getBoundingClientRect();
                     return [b.left, b.top, b.right, b.bottom]; };
                   return {title: r('.cvz-title'), legend: r('.cvz-legend'), canvas: r('.cvz-canvas')}; }"""
    )
    title, legend, canvas = boxes["title"], boxes["legend"], boxes["canvas"]
    assert canvas[3] <= 720 and canvas[1] > 0
    assert legend[1] >= title[3]  # the legend starts below the title: they never overlap
    assert errors == []
    page.screenshot(path=str(ARTIFACTS / "browser-presentation.png"))
    page.close()


def test_follows_a_run_while_it_is_written(server, browser, live_run):
    page, first, _ = open_graph(browser, f"{server}/?run=svd-live&top_n=40")
    page.get_by_text("still being written").wait_for(timeout=15_000)
    scores = np.random.default_rng(1).standard_normal(GRAPH.n_edges).astype(np.float32)
    live_run.add_snapshot(10, "during", "sv-disagreement", scores, np.abs(scores) > 1.5)
    later = wait_for(
        page, "() => document.querySelector('.cvz').dataset.step === '10'", timeout_s=30
    )
    assert later  # the new snapshot appeared without touching the page
    page.wait_for_url(re.compile(r"run=svd-live"), timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "browser-live.png"))
    page.close()


def test_user_input_is_shown_as_text(server, browser):
    """A link's run id may carry markdown, HTML, LaTeX or icons: the page shows it literally."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    bad = "**bold** <b>x</b> $x^2$ :smile: :material/home:"
    page.goto(f"{server}/?run={urllib.request.quote(bad)}")
    alert = page.locator("[data-testid='stAlertContentError']").first
    alert.wait_for(timeout=30_000)
    text = alert.inner_text().replace("\u200b", "")  # zero-width spaces keep icons out
    assert bad in text and "was not found" in text
    assert alert.locator("b, strong, .katex").count() == 0
    page.goto(f"{server}/?run=..%2F..%2Fetc")
    alert = page.locator("[data-testid='stAlertContentError']").first
    alert.wait_for(timeout=30_000)
    assert "/" not in alert.inner_text().replace("../../etc", "")  # no server path
    page.close()


def test_every_page_opens(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    for path in ("dynamics", "heads", "mechanisms", "run", "export", "tour"):
        page.goto(f"{server}/{path}?run=svd-circuit")
        page.wait_for_selector("[data-testid='stMain']", timeout=30_000)
        page.wait_for_timeout(1500)
        assert page.locator("[data-testid='stException']").count() == 0, path
    page.close()


def test_the_mechanisms_page_draws_its_figures(server, browser):
    """The DLA heatmaps (with the flipped head), the DLA, faithfulness and overlap lines, drawn by
    plotly in a real browser (the step slider is tested in tests/test_app.py)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/mechanisms?run=svd-circuit")
    wait_for(page, "document.querySelectorAll('.js-plotly-plot').length >= 8", timeout_s=60)
    assert page.locator("[data-testid='stException']").count() == 0
    # What plotly drew (its calculated data), not the spec it was sent.
    cell = "i => document.querySelector('.js-plotly-plot').calcdata[i][0].z[2][1]"
    assert page.evaluate(cell, 1) == -1.0  # a2.h1 at the last analysed step
    assert page.evaluate(cell, 0) == 1.0  # and at step 0
    assert page.locator(".js-plotly-plot .heatmaplayer").count() >= 1
    lines = (
        "Array.from(document.querySelectorAll('.js-plotly-plot')).slice(1).map(p => p.data.length)"
    )
    # the two holders of the role; attention panels; one head's pattern; OV path and cosine; own
    # and initial at 2 budgets; their CPR and CMD; edges and nodes
    assert page.evaluate(lines)[1:] == [2, 2, 1, 2, 4, 4, 2]
    page.close()


def test_the_exported_player_scrubs_offline(root, browser, tmp_path):
    """``export --out x.player.html``: the same renderer and every snapshot in one file."""
    from circuitviz.cli import main

    out = tmp_path / "run.player.html"
    assert main(["export", "--runs-dir", str(root), "--run", "svd-circuit", "--out", str(out)]) == 0
    assert re.search(r"<script[^>]*\bsrc=", out.read_text()) is None  # nothing from elsewhere
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(out.as_uri())
    first = wait_for(page, GRAPH_STATE)
    page.locator(".cvz-step").focus()
    page.keyboard.press("ArrowLeft")
    moved = wait_for(page, GRAPH_STATE, differs_from=first)
    assert moved["step"] == "60"
    assert [url for url in requests if not url.startswith("file:")] == []
    page.close()


def test_jobs_are_off_when_served_on_the_network(root, browser, tmp_path):
    process, url, log = start_server(root, tmp_path / "server.log", "--host", "0.0.0.0")
    try:
        log.seek(0)
        assert "reachable from the network" in log.read()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/run")
        page.get_by_text("Starting and stopping jobs is off").wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Start").is_disabled()
        page.close()
    finally:
        stop_server(process, log)
