"""Whether the Hugging Face hub can be reached from here, found in milliseconds.

Without a network the hub libraries retry a download for half a minute or more, printing a warning
per attempt, before they fail; a command should say so in one line at once instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached ("huggingface.co does not resolve": its host, from
    ``$HF_ENDPOINT`` or the default), or None if it may be reachable. Behind a proxy the host
    need not resolve here (the proxy resolves it), so a configured proxy is taken as reachable."""
    from urllib.request import getproxies

    if {"http", "https", "all"} & set(getproxies()):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return f"{host} does not resolve"
    return None


def hub_offline(*names: str) -> bool:
    """Whether the user switched the hub off: ``HF_HUB_OFFLINE`` (or any of ``names``, e.g.
    ``HF_DATASETS_OFFLINE``) set to 1, true, yes or on, as the Hugging Face libraries read it."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", *names)
    )
