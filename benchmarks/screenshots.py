"""Regenerate the README's dashboard screenshots (``assets/screenshots/*.png``) with the same
headless Chromium the browser test drives: ``python benchmarks/screenshots.py``.

It serves the dashboard on the bundled demo runs (``assets/demo-runs``) and photographs the first
screen, a before/after comparison, the dynamics and the heads pages. ``--runs-dir`` adds runs of
your own; ``--out`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
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
# (file name, URL path and query after the run, viewport height)
SHOTS = (
    ("circuit.png", "/?step=after", 1050),
    ("compare.png", "/?step=after&compare=0", 1250),
    ("dynamics.png", "/dynamics?", 1500),
    ("heads.png", "/heads?", 1250),
)
READY = """() => {
  const plots = document.querySelectorAll('.js-plotly-plot');
  const running = document.querySelector('[data-testid="stStatusWidget"]');
  return plots.length > 0 && !running;
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None, help="runs besides the bundled demo runs")
    parser.add_argument("--run", default=None, help="run id to show (default: the app's choice)")
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-c",
        "import sys; from circuitviz.cli import main; sys.exit(main())",
    ]
    command += ["app", "--port", str(port), "--no-browser"]
    if args.runs_dir:
        command += ["--runs-dir", args.runs_dir]
    env = {**os.environ, "CIRCUITVIZ_RUNS": os.environ.get("CIRCUITVIZ_RUNS", "/nonexistent")}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://localhost:{port}"
    try:
        _wait_healthy(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for name, path, height in SHOTS:
                page = browser.new_page(viewport={"width": 1400, "height": height})
                query = f"&run={args.run}" if args.run else ""
                page.goto(f"{url}{path}{query}")
                page.wait_for_function(READY, timeout=60_000)
                page.wait_for_timeout(2000)  # plotly's last paint
                page.screenshot(path=str(out / name))
                print(f"wrote {out / name}")
                page.close()
            browser.close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
    return 0


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the dashboard did not answer at {url} within {timeout_s:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
