"""What a running ``gemma-runtime fetch`` tells the operator: a tiny HTTP endpoint while it works, and a
one-line message when it ends.

The operator cannot read an init container's logs cheaply, and the runtime never talks to the Kubernetes
API, so the fetch serves ``GET /fetch`` (JSON: state, bytes done and total, files) on the pod's runtime
port, which is free until the runtime container starts; the operator pulls it like ``/stats``. When the
fetch ends it writes a message file (the container's termination message, ``/dev/termination-log``):
JSON ``{"state": "done", ...}`` or ``{"state": "failed", "error": ...}``, which the kubelet copies into
the pod's status, where the operator reads it after the container is gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gemma_runtime.endpoints import Endpoints

log = logging.getLogger(__name__)

PATH = "/fetch"


class FetchStatus:
    """The state of one fetch, updated by the downloader's progress callback; thread-safe."""

    def __init__(self, uri: str) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._doc: dict[str, Any] = {"uri": uri, "state": "listing", "bytes_done": 0, "bytes_total": None}

    def progress(self, done: int, total: int) -> None:
        with self._lock:
            self._doc.update(state="downloading", bytes_done=done, bytes_total=total)

    def finish(self, **fields: Any) -> None:
        with self._lock:
            self._doc.update(fields)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            doc = dict(self._doc)
        seconds = time.monotonic() - self._started
        doc["seconds"] = round(seconds, 3)
        doc["bytes_per_second"] = round(int(doc.get("bytes_done") or 0) / max(seconds, 1e-6), 1)
        return doc


@contextmanager
def serving(status: FetchStatus, host: str, port: int | None) -> Iterator[int | None]:
    """Serve ``status`` on ``host:port`` for the duration (no server when ``port`` is None); yields the
    bound port. A port already taken is logged, not fatal: progress is a convenience."""
    if port is None:
        yield None
        return

    def fetch() -> tuple[str, bytes]:
        return "application/json", json.dumps(status.snapshot()).encode()

    try:
        endpoints = Endpoints(host, port, {PATH: fetch})
    except OSError as err:
        log.warning("cannot serve fetch progress on %s:%d: %s", host, port, err)
        yield None
        return
    try:
        yield endpoints.port
    finally:
        endpoints.close()
