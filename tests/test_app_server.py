"""``circuitviz app`` as a process: the address is checked before a URL is announced, and SIGTERM
or SIGINT to the command stops the Streamlit server too, freeing the port."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from circuitviz.cli import main

ENTRY = "import sys; from circuitviz.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_frees_the_port(tmp_path, signum):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "app", "--port", str(port), "--no-browser"]
        + ["--runs-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so that only the command itself gets the signal
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the dashboard did not start within 60 s")
        (server,) = children_of(process.pid)  # the Streamlit server is a child process
        os.kill(process.pid, signum)  # the command alone, as `kill` or Ctrl+C in a script would
        assert process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert port_is_free(port), "the Streamlit server still holds the port"
        assert not os.path.exists(f"/proc/{server}") or _zombie(server)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


def test_an_address_that_cannot_be_served_is_one_line(capsys):
    assert main(["app", "--host", "999.1.1.1", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "--host 999.1.1.1 is not an address" in err and "Traceback" not in err
    assert main(["app", "--host", "10.254.254.254", "--no-browser"]) == 2
    assert "not an address of this machine" in capsys.readouterr().err


def test_a_port_in_use_is_not_announced(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--port", str(port), "--no-browser"]) == 2
    captured = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is already in use" in captured.err
    assert "circuitviz dashboard:" not in captured.out  # no URL that does not work
