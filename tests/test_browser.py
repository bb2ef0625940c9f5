"""End to end: ``circuitviz app`` serves the real dashboard, Debian's Chromium (driven by playwright,
never a downloaded browser) opens it, the step slider moves by keyboard, and the graph changes.
Screenshots land in ``test-artifacts/`` (``benchmarks/screenshots.py`` makes the README's)."""

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

from circuitviz.graph.topology import build_graph
from circuitviz.runs import RunWriter
from circuitviz.runs.synthetic import write_synthetic_run

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
# The names of the edges the circuit figure shows, read from plotly's own copy of the figure.
SHOWN_EDGES = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot.data) return null;
  const edges = plot.data.find(t => t.name === 'edges');
  return edges ? Array.from(edges.hovertext).map(h => h.split('<br>')[0]).join('|') : null;
}"""

# Page pixel position of a box's centre, through plotly's own axes.
BOX_CENTRE = """(name) => {
  const plot = document.querySelector('.js-plotly-plot');
  const layout = plot._fullLayout, box = plot.getBoundingClientRect();
  const nodes = plot._fullData.find(t => t.name === 'nodes');
  const i = nodes.customdata.indexOf(name);
  return [box.left + layout.margin.l + layout.xaxis.l2p(nodes.x[i]),
          box.top + layout.margin.t + layout.yaxis.l2p(nodes.y[i])];
}"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


GRAPH = build_graph(4, 4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root, run_id="svd-circuit", n_steps=80, graph=GRAPH, snapshot_every=20)
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


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")  # noqa: SIM115
    command = [
        sys.executable,
        "-c",
        "import sys; from circuitviz.cli import main; sys.exit(main())",
    ]
    process = subprocess.Popen(
        [*command, "app", "--port", str(port), "--runs-dir", str(root), "--no-browser"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        else:
            log.seek(0)
            pytest.fail(f"the dashboard did not start within 60 s:\n{log.read()}")
        log.seek(0)
        assert f"circuitviz dashboard: {url}" in log.read()  # the command prints the URL
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
        log.close()


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


def wait_for(page, script, *, differs_from=None, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value and value != differs_from:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for the page ({script[:60]}...)")


def test_slider_moves_the_graph(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{server}/?run=svd-circuit&step=before&top_n=60")
    before = wait_for(page, SHOWN_EDGES)
    assert len(before.split("|")) == 60
    page.screenshot(path=str(ARTIFACTS / "browser-circuit-before.png"))

    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    page.keyboard.press("ArrowRight")
    after = wait_for(page, SHOWN_EDGES, differs_from=before)
    assert after != before and len(after.split("|")) == 60
    page.wait_for_url(re.compile(r"step=20"), timeout=15_000)  # the view is in the URL
    time.sleep(1.0)  # let plotly finish painting before the picture
    page.screenshot(path=str(ARTIFACTS / "browser-circuit-step20.png"))
    assert (ARTIFACTS / "browser-circuit-step20.png").stat().st_size > 10_000

    page.reload()  # a reload reopens the same view
    assert wait_for(page, SHOWN_EDGES) == after
    page.close()


def test_clicking_a_box_selects_it(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{server}/?run=svd-circuit&step=before&top_n=60")
    wait_for(page, SHOWN_EDGES)
    x, y = page.evaluate(BOX_CENTRE, "a1.h2")
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(r"node=a1\.h2"), timeout=15_000)
    page.get_by_text("a1.h2 owns its rows of W_Q").wait_for(timeout=15_000)
    page.close()


def test_follows_a_run_while_it_is_written(server, browser, live_run):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{server}/?run=svd-live&top_n=40")
    first = wait_for(page, SHOWN_EDGES)
    page.get_by_text("still being written").wait_for(timeout=15_000)
    scores = np.random.default_rng(1).standard_normal(GRAPH.n_edges).astype(np.float32)
    live_run.add_snapshot(10, "during", "sv-disagreement", scores, np.abs(scores) > 1.5)
    later = wait_for(page, SHOWN_EDGES, differs_from=first, timeout_s=30)
    assert later != first  # the new snapshot appeared without touching the page
    page.wait_for_url(re.compile(r"step=10"), timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "browser-live.png"))
    page.close()


def test_every_page_opens(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    for path in ("dynamics", "heads", "run", "export", "tour"):
        page.goto(f"{server}/{path}?run=svd-circuit")
        page.wait_for_selector("[data-testid='stMain']", timeout=30_000)
        page.wait_for_timeout(1500)
        assert page.locator("[data-testid='stException']").count() == 0, path
    page.close()
