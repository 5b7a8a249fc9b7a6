"""The Hugging Face hub, when a command names a hub id: offline is found at once and said in one line.

A machine without a network (or with ``HF_HUB_OFFLINE=1``) would otherwise retry each request for
about a minute and end in a raw ``ConnectionError``. :func:`fetch` probes the hub's host first (a
plain TCP connection, a few seconds at most); when it cannot be reached, the call runs in the
libraries' offline mode, so what is cached still loads and anything else fails at once, and the
failure becomes one line naming what was asked for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from urllib.parse import urlparse

from unlearn.errors import UnlearnError

PROBE_SECONDS = 3.0
_OFFLINE_FLAGS = (  # (module, attribute) of the libraries' offline switches, where they are imported
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
    ("transformers.utils.hub", "_is_offline_mode"),
)


def offline_by_setting() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def reachable(timeout: float = PROBE_SECONDS) -> bool:
    """The hub's host accepts a TCP connection (``HF_ENDPOINT``, else huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode():
    saved_env = {v: os.environ.get(v) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved = []
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for module, attr in _OFFLINE_FLAGS:
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_OFFLINE_WORDS = ("offline", "couldn't connect", "couldn't reach", "cached files", "connection", "not in the cache")


def _for_want_of_network(error: Exception) -> bool:
    """The error of a download that needed the network (as opposed to a gated or missing repository)."""
    text = f"{type(error).__name__} {error}".lower()
    if any(code in text for code in ("401", "403", "gated", "404 client")):
        return False
    return isinstance(error, (ConnectionError, TimeoutError)) or any(w in text for w in _OFFLINE_WORDS)


def fetch(what: str, error: type[UnlearnError], fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a hub download of ``what``; offline (by setting or found by the probe)
    it runs in offline mode, and a failure there is one ``error`` line."""
    by_setting = offline_by_setting()
    offline = by_setting or not reachable()
    if not offline:
        return fn(*args, **kwargs)
    try:
        with _offline_mode():
            return fn(*args, **kwargs)
    except UnlearnError:
        raise
    except Exception as e:
        if not _for_want_of_network(e):
            raise  # (a gated or missing repository: the caller's own message)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        why = "HF_HUB_OFFLINE=1 is set" if by_setting else "the Hugging Face hub cannot be reached (offline)"
        raise error(
            f"{what}: {why} and it is not in the local cache ({first}); connect, or give a local folder"
        ) from None
