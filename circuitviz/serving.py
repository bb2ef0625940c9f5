"""Who may do what on a served dashboard: the one policy ``circuitviz app`` and the app share.

A dashboard bound to loopback is reachable from this machine only, and its Run page may start and
stop jobs. Bound to any other address it is reachable from the network without authentication, so
jobs stay off unless ``circuitviz app --allow-remote-jobs`` sets ``REMOTE_JOBS_ENV``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

REMOTE_JOBS_ENV = "CIRCUITVIZ_ALLOW_REMOTE_JOBS"


def is_loopback(address: str | None) -> bool:
    """Whether a server address is reachable from this machine only. An empty address (Streamlit's
    default) listens on every interface, so it is not."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def jobs_allowed(address: str | None, env: Mapping[str, str] | None = None) -> bool:
    """Starting and stopping jobs: on loopback always; elsewhere only when allowed explicitly."""
    env = os.environ if env is None else env
    return is_loopback(address) or env.get(REMOTE_JOBS_ENV) == "1"
