"""Regenerate the README's dashboard screenshots (``assets/screenshots/*.png``) with the same
headless Chromium the browser tests drive: ``python benchmarks/screenshots.py``.

It serves the dashboard on the bundled demo runs (``assets/demo-runs``, the SmolLM2-135M run
included) plus a synthetic run of GPT-2 small's shape (12 x 12 heads: no GPT-2 weights ship offline),
and photographs the first screen, a before/after comparison, the two large graphs, presentation
mode at 1280 x 720, the dynamics and the heads pages, and boxes coloured by direct logit attribution. ``--only NAME`` retakes one picture.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
SMOL = "smollm2-sv-disagreement"
# (file name, URL path and query, viewport width, height)
SHOTS = (
    ("circuit.png", "/?run=sv-disagreement-circuit&step=after&top_n=100", 1400, 950),
    ("compare.png", "/?run=sv-disagreement-circuit&step=after&compare=before&top_n=100", 1400, 950),
    ("gpt2-small.png", "/?run=gpt2-small-shape&step=after&top_n=400", 1400, 1000),
    ("smollm2.png", f"/?run={SMOL}&step=after&top_n=300", 1400, 1000),
    (
        "smollm2-focus.png",
        f"/?run={SMOL}&step=after&top_n=1000&node=m12&focus=1&collapse=1",
        1400,
        1000,
    ),
    ("presentation.png", f"/?run={SMOL}&step=after&top_n=200&presentation=1", 1280, 720),
    (
        "dynamics.png",
        "/dynamics?run=sv-disagreement-circuit&step=400&overlay=sv-disagreement-full",
        1400,
        1500,
    ),
    ("heads.png", "/heads?run=sv-disagreement-circuit", 1400, 1250),
    (
        "dla-boxes.png",
        "/?run=sv-disagreement-circuit&step=after&compare=0&compare_mode=side&top_n=40&node_color=dla",
        1400,
        950,
    ),
    ("smollm2-dla.png", f"/?run={SMOL}&step=after&top_n=300&node_color=dla&collapse=1", 1400, 1000),
)
READY = """() => {
  const running = document.querySelector('[data-testid="stStatusWidget"]');
  const graph = document.querySelector('.cvz');
  const plots = document.querySelectorAll('.js-plotly-plot');
  return !running && ((graph && graph.dataset.renderCount) || plots.length > 0);
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    parser.add_argument("--only", default=None, help="one file name from the list")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as runs:
        _gpt2_shaped_run(runs)
        server, url = _serve(runs)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                for name, path, width, height in SHOTS:
                    if args.only and name != args.only:
                        continue
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(f"{url}{path}")
                    page.wait_for_function(READY, timeout=120_000)
                    page.wait_for_timeout(3000)  # the graph fits itself; plotly's last paint
                    page.screenshot(path=str(out / name))
                    print(f"wrote {out / name}")
                    page.close()
                browser.close()
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=20)
    return 0


def _gpt2_shaped_run(runs: str) -> None:
    from circuitviz.graph.topology import build_graph

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.synthetic import write_synthetic_run

    write_synthetic_run(
        runs,
        run_id="gpt2-small-shape",
        graph=build_graph(12, 12),
        n_steps=200,
        snapshot_every=20,
        task="sv-disagreement",
    )


def _serve(runs: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    entry = "import sys; from circuitviz.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "app", "--port", str(port), "--no-browser"]
    server = subprocess.Popen(command + ["--runs-dir", runs], start_new_session=True)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return server, url
        except OSError:
            time.sleep(0.3)
    os.killpg(server.pid, 15)
    raise RuntimeError(f"the dashboard did not answer at {url} within 60 s")


if __name__ == "__main__":
    sys.exit(main())
