"""``circuitviz app``: serve the dashboard (``app/main.py``) with Streamlit, on 127.0.0.1 by default."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path

from circuitviz.cli.common import UserError, require_app_extra

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "app",
        help="open the dashboard in the browser",
        description="Serve the circuitviz dashboard. It lists the runs under --runs-dir (default "
        "$CIRCUITVIZ_RUNS or ./runs) plus the bundled demo runs, and opens on the demo circuit.",
    )
    parser.add_argument("--port", type=int, default=8501, help="default 8501")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 shares it on the "
        "network, without authentication)",
    )
    parser.add_argument("--runs-dir", default=None, metavar="DIR", help="where runs live")
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="only print the URL (default: also open it in a browser when a display is present)",
    )
    parser.set_defaults(func=run_app)


def streamlit_command(host: str, port: int) -> list[str]:
    # Always headless: Streamlit's own browser opening asks for an e-mail address on first use.
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_MAIN),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def run_app(args) -> int:
    require_app_extra("the dashboard")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not APP_MAIN.is_file():
        raise UserError(
            f"the dashboard's entry point {APP_MAIN} is missing; circuitviz must be installed "
            "from its source tree (pip install -e .)"
        )
    env = dict(os.environ)
    if args.runs_dir is not None:
        runs_dir = Path(args.runs_dir).resolve()
        if runs_dir.exists() and not runs_dir.is_dir():
            raise UserError(f"--runs-dir {args.runs_dir} is a file, not a directory")
        env["CIRCUITVIZ_RUNS"] = str(runs_dir)
    shown = "localhost" if args.host in ("127.0.0.1", "localhost", "0.0.0.0") else args.host
    url = f"http://{shown}:{args.port}"
    print(f"circuitviz dashboard: {url}  (Ctrl+C to stop)", flush=True)
    server = subprocess.Popen(streamlit_command(args.host, args.port), env=env)
    try:
        if not args.no_browser and _has_display() and wait_healthy(url, server):
            webbrowser.open(url)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return 0


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> bool:
    """Poll Streamlit's health endpoint until it answers "ok" (False if the server died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read().strip() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
