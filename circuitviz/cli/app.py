"""``circuitviz app``: serve the dashboard (``app/main.py``) with Streamlit, on 127.0.0.1 by default.

Safe by default:

1. The address is checked before anything starts: one that is not this machine's, or a port in use,
   is one clear line (never a URL that does not work).
2. Any address but loopback is reachable from the network without authentication: a warning says
   so, and the dashboard will not start or stop jobs unless ``--allow-remote-jobs`` is given.
3. SIGTERM, SIGINT and SIGHUP to this command stop the Streamlit server too (it runs as a child
   process), so the port is free when the command has exited.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path

from circuitviz.cli.common import UserError, require_app_extra
from circuitviz.serving import REMOTE_JOBS_ENV, is_loopback

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
STOP_GRACE_S = 10.0


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
        "network, without authentication, and then starting jobs is off)",
    )
    parser.add_argument("--runs-dir", default=None, metavar="DIR", help="where runs live")
    parser.add_argument(
        "--allow-remote-jobs",
        action="store_true",
        help="let the Run page start and stop jobs even when --host is not loopback (anyone who "
        "can reach the dashboard can then run processes on this machine)",
    )
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


def check_address(host: str, port: int) -> None:
    """UserError (one line) unless ``host:port`` can be bound here, now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UserError(
            f"--host {host} is not an address (use 127.0.0.1 for this machine only, or 0.0.0.0 "
            "for every network interface)"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use (another dashboard?); stop it or "
                    "pick another with --port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UserError(
                    f"--host {host} is not an address of this machine (use 127.0.0.1, or 0.0.0.0 "
                    "for every interface)"
                ) from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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
    check_address(args.host, args.port)
    env.pop(REMOTE_JOBS_ENV, None)
    if not is_loopback(args.host):
        jobs = "allowed (--allow-remote-jobs)" if args.allow_remote_jobs else "off"
        print(
            f"warning: --host {args.host} makes the dashboard reachable from the network, without "
            f"authentication: anyone who can reach this port sees every run. Starting and stopping "
            f"jobs is {jobs}.",
            file=sys.stderr,
            flush=True,
        )
        if args.allow_remote_jobs:
            env[REMOTE_JOBS_ENV] = "1"
    shown = "localhost" if args.host in ("127.0.0.1", "localhost", "0.0.0.0") else args.host
    url = f"http://{shown}:{args.port}"
    print(f"circuitviz dashboard: {url}  (Ctrl+C to stop)", flush=True)
    server = subprocess.Popen(streamlit_command(args.host, args.port), env=env)
    restore = _forward_signals(server)
    try:
        if not args.no_browser and _has_display() and wait_healthy(url, server):
            webbrowser.open(url)
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop(server)
        restore()
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def _forward_signals(server: subprocess.Popen):
    """Stop the server when this process is told to stop; returns a function that undoes it."""
    previous = {}

    def handler(signum, frame) -> None:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            threading.Timer(STOP_GRACE_S, _kill, args=(server,)).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _kill(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.kill()


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
