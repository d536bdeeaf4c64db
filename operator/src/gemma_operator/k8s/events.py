"""Kubernetes Events about our resources (``events.k8s.io/v1``), without repeating ourselves.

A reconcile loop re-runs on every change and resync, so the same "Warning Invalid ..." would be emitted
over and over; :class:`EventRecorder` drops an event equal to one it emitted within the last minute.
The memory is per process, which is enough: a restarted operator saying it once more is harmless.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from gemma_operator.k8s.client import Kube

REPORTING_CONTROLLER = "gemma.ai/gemma-operator"
NOTE_LIMIT = 1024  # bytes; the API server refuses a longer note
_FIELD_LIMIT = 128  # reason, action and reportingInstance
_NAME_LIMIT = 253

EventType = Literal["Normal", "Warning"]


class EventRecorder:
    """Emits Events, skipping one whose (object uid, reason, message) was emitted within ``window`` s."""

    def __init__(
        self,
        window: float = 60.0,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.instance = instance or socket.gethostname()  # the pod name, inside a pod
        self._clock = clock
        self._sent: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def emit(
        self,
        kube: Kube,
        involved: dict[str, Any],
        type: EventType,
        reason: str,
        message: str,
        *,
        action: str = "Reconcile",
        component: str = "gemma-operator",
    ) -> dict[str, Any] | None:
        """Create the Event about ``involved`` (an object as the API returned it); returns it as stored,
        or None when an equal one was emitted within the window."""
        meta = involved["metadata"]
        key = (str(meta.get("uid", "")), reason, message)
        now = self._clock()
        with self._lock:
            self._sent = {k: t for k, t in self._sent.items() if now - t < self.window}
            if key in self._sent:
                return None
            self._sent[key] = now
        body = event_body(
            involved, type, reason, message, action=action, instance=f"{component}-{self.instance}"
        )
        try:
            return kube.create(body)
        except BaseException:
            with self._lock:  # not emitted, so not a duplicate next time
                self._sent.pop(key, None)
            raise


def event_body(
    involved: dict[str, Any],
    type: EventType,
    reason: str,
    message: str,
    *,
    action: str,
    instance: str,
) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event object (pure; the recorder creates it)."""
    meta = involved["metadata"]
    regarding = {
        "apiVersion": involved["apiVersion"],
        "kind": involved["kind"],
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    now = datetime.datetime.now(datetime.UTC)
    # client-go's naming: the object's name and the time in hex, unique enough and easy to trace.
    suffix = f".{time.time_ns():x}"
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": meta["name"][: _NAME_LIMIT - len(suffix)] + suffix,
            # An Event about a cluster-scoped object lives in "default", as the API server requires.
            "namespace": meta.get("namespace") or "default",
        },
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": type,
        "reason": reason[:_FIELD_LIMIT],
        "action": action[:_FIELD_LIMIT],
        "note": _truncate_utf8(message, NOTE_LIMIT),
        "regarding": {k: v for k, v in regarding.items() if v},
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:_FIELD_LIMIT],
    }


def _truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary, ending in "..." when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."
