"""How long the dashboard takes, in a real browser, from a key press on the step slider to the new
graph, and from a click on a box to its details: ``python benchmarks/browser.py [--json]``.

Synthetic runs of GPT-2 small's shape (12 x 12 heads, 32,491 edges) and of SmolLM2-135M's (30 x 9
heads, 3 key/value heads, 70,651 edges), 11 snapshots each, are served by ``circuitviz app`` and
opened in Debian's headless Chromium. For each shape and top-N:

1. wait until the page has drawn and sorted every snapshot;
2. press an arrow key on the step slider 20 times (right to the end, then back), each time
   measuring, inside the page, from the keydown event to the graph's DOM update (the canvas is
   redrawn and the renderer's counter changes: ``*_redraw_ms``) and to the next painted frame after
   it (``*_painted_ms``; ``browser_redraw_ms`` is this one, for GPT-2 small at the largest top-N);
3. click 10 boxes and measure from the click to the node details panel's update.

As a baseline, the same key press on a slider that still asks the server (the Heads page's step
slider: a Streamlit round trip that redraws a heatmap) is timed the same way, side by side.
The machine's load average is reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
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
SHAPES = {"gpt2-small": (12, 12, 12), "smollm2-135m": (30, 9, 3)}
# Installed in the page: the time of every keydown/click, and of every graph update after it.
PROBE = """() => {
  window.__bench = {events: [], updates: [], painted: [], details: []};
  const b = window.__bench;
  document.addEventListener('keydown', () => b.events.push(performance.now()), true);
  document.addEventListener('click', () => b.events.push(performance.now()), true);
  const root = document.querySelector('.cvz');
  new MutationObserver(() => {
    const t = performance.now();
    b.updates.push(t);
    requestAnimationFrame(() => requestAnimationFrame(() => b.painted.push(performance.now())));
  }).observe(root, {attributes: true, attributeFilter: ['data-render-count']});
  new MutationObserver(() => b.details.push(performance.now()))
    .observe(root.querySelector('.cvz-details'), {attributes: true, attributeFilter: ['data-node']});
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--top-n", default="100,1000", help="comma-separated (default 100,1000)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="gpt2-small,smollm2-135m")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    top_ns = [int(n) for n in args.top_n.split(",")]
    load_before = os.getloadavg()
    report: dict = {"presses": args.presses, "load_average_1m_before": round(load_before[0], 2)}
    with tempfile.TemporaryDirectory() as root:
        _write_runs(root, args.shapes.split(","))
        server, url = _serve(root)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                for shape in args.shapes.split(","):
                    for top_n in top_ns:
                        report.update(_measure(browser, url, shape, top_n, args.presses))
                report.update(_baseline(browser, url, args.shapes.split(",")[0], args.presses))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    report["cpu_count"] = os.cpu_count()
    first = args.shapes.split(",")[0]
    # The canvas is drawn in the key's own event handler, but much of the drawing happens when the
    # frame is painted: the headline figures run from the key event to the next painted frame, on
    # the first shape (GPT-2 small) at top-1,000 (goal <= 200 ms) and top-100 (goal <= 100 ms).
    for top_n, name in ((1000, "browser_redraw_ms"), (100, "browser_redraw_top100_ms")):
        key = f"{first}_top{top_n}_painted_ms"
        if key in report:
            report[name] = report[key]
    base = report.get("baseline_server_roundtrip_ms")
    if base and "browser_redraw_ms" in report:
        report["redraw_over_roundtrip"] = round(report["browser_redraw_ms"] / base, 3)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for name, value in report.items():
            print(f"{name:>40}  {value}")
    return 0


def _write_runs(root: str, shapes: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from circuitviz.graph.topology import build_graph

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.synthetic import write_synthetic_run

    for name in shapes:
        graph = build_graph(*SHAPES[name])
        write_synthetic_run(root, run_id=name, n_steps=200, graph=graph, snapshot_every=20)


def _serve(root: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    entry = "import sys; from circuitviz.cli import main; sys.exit(main())"
    server = subprocess.Popen(
        [sys.executable, "-c", entry, "app", "--port", str(port), "--runs-dir", root]
        + ["--no-browser"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return server, url
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise RuntimeError(f"the dashboard did not answer at {url}")


def _wait(page, script: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {script[:60]}")


def _measure(browser, url: str, shape: str, top_n: int, presses: int) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.monotonic()
    page.goto(f"{url}/?run={shape}&step=before&top_n={top_n}")
    _wait(page, "() => window.__circuitviz && window.__circuitviz.main")
    first_draw_s = time.monotonic() - start
    _wait(page, "() => window.__circuitviz.main.ready()")
    time.sleep(1.0)  # the page settles (fitting the window, the first report)
    page.evaluate(PROBE)
    page.locator(".cvz-step").focus()
    n_steps = page.evaluate("() => window.__circuitviz.main.state.m.nS")
    keys = ["ArrowRight"] * (n_steps - 1) + ["ArrowLeft"] * (n_steps - 1)
    for i in range(presses):
        before = page.evaluate("() => window.__bench.painted.length")
        page.keyboard.press(keys[i % len(keys)])
        _wait(page, f"() => window.__bench.painted.length > {before}", 30)
    bench = page.evaluate("() => window.__bench")
    events, updates, painted = bench["events"], bench["updates"], bench["painted"]
    redraw = [u - e for e, u in zip(events, updates)]
    paint = [p - e for e, p in zip(events, painted)]
    # Node clicks: the details panel of 10 boxes (each a different one).
    page.evaluate("() => { window.__bench.events = []; window.__bench.details = []; }")
    names = page.evaluate(
        """() => window.__circuitviz.main.state.m.g.node_names
                 .filter((n, i, all) => /^a\\d+\\.h\\d+$/.test(n)).filter((_, i) => i % 7 === 3)
                 .slice(0, 10)"""
    )
    clicks = []
    for name in names:
        x, y = page.evaluate(_BOX_CENTRE, name)
        page.evaluate("() => { window.__bench.events = []; window.__bench.details = []; }")
        page.mouse.click(x, y)
        _wait(page, "() => window.__bench.details.length > 0", 30)
        bench = page.evaluate("() => window.__bench")
        clicks.append(min(bench["details"]) - bench["events"][0])
        page.mouse.click(x, y)  # deselect, so the next click selects again
        time.sleep(0.1)
    payload = page.evaluate(
        "() => window.__circuitviz.main.state.m.scores.length * 2 + "
        "window.__circuitviz.main.state.m.route.length * 4"
    )
    page.close()
    prefix = f"{shape}_top{top_n}"
    return {
        f"{prefix}_redraw_ms": round(statistics.median(redraw), 1),
        f"{prefix}_redraw_max_ms": round(max(redraw), 1),
        f"{prefix}_painted_ms": round(statistics.median(paint), 1),
        f"{prefix}_click_to_details_ms": round(statistics.median(clicks), 1),
        f"{prefix}_first_draw_s": round(first_draw_s, 2),
        f"{shape}_payload_mb": round(payload / 1e6, 2),
    }


_BOX_CENTRE = """(name) => {
  const s = window.__circuitviz.main.state, g = s.m.g, n = s.m.nodeIndex.get(name);
  const p = s.drawn[s.drawn.length - 1], rect = s.dom.canvas.getBoundingClientRect();
  const yTop = g.node_y[n] + g.node_h[n] / 2, yBot = g.node_y[n] - g.node_h[n] / 2;
  return [rect.left + p.x0 + p.frame.sx(g.node_x[n]),
          rect.top + (p.frame.sy(yTop) + p.frame.sy(yBot)) / 2];
}"""


def _baseline(browser, url: str, shape: str, presses: int) -> dict:
    """The same key press on a slider that asks the server (Heads page: a Streamlit round trip
    and a plotly heatmap redraw), from keydown to the chart's DOM update."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/heads?run={shape}&step=before")
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    time.sleep(2.0)
    page.evaluate(
        """() => { window.__base = {events: [], updates: []};
          document.addEventListener('keydown', () => window.__base.events.push(performance.now()), true);
          const plot = document.querySelector('.js-plotly-plot');
          new MutationObserver(() => window.__base.updates.push(performance.now()))
            .observe(document.querySelector('[data-testid="stMain"]'),
                     {subtree: true, childList: true, attributes: true, attributeFilter: ['d']}); }"""
    )
    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    n = min(presses, 10)
    for i in range(n):
        page.evaluate("() => { window.__base.updates = []; }")
        page.keyboard.press("ArrowRight" if i < 5 else "ArrowLeft")
        # The heatmap is redrawn when the server's new figure arrives: wait for quiet.
        _wait(page, "() => window.__base.updates.length > 0", 60)
        time.sleep(1.5)
        page.evaluate(
            "() => { const b = window.__base; b.done = (b.done || []).concat("
            "[b.updates[b.updates.length - 1] - b.events[b.events.length - 1]]); }"
        )
    done = page.evaluate("() => window.__base.done")
    page.close()
    return {"baseline_server_roundtrip_ms": round(statistics.median(done), 1)}


if __name__ == "__main__":
    sys.exit(main())
