"""What every handler needs, built once at start-up and kept in kopf's operator-level memo."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import kopf

from gemma_operator.config import Settings
from gemma_operator.k8s import EventRecorder, Kube

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Context:
    kube: Kube
    settings: Settings
    recorder: EventRecorder
    locks: defaultdict[tuple[str, str, str], threading.Lock] = dataclasses.field(
        default_factory=lambda: defaultdict(threading.Lock)
    )

    pending: dict[tuple[str, str, str], threading.Timer] = dataclasses.field(default_factory=dict)
    pending_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def debounce(self, key: tuple[str, str, str], action: Callable[[], None], *, force: bool = False) -> None:
        """Run ``action`` once after ``settings.debounce_seconds``, however many times it is asked for
        in between (``force`` runs it now as well)."""
        if force:
            action()
            return

        def fire() -> None:
            with self.pending_lock:
                self.pending.pop(key, None)
            try:
                action()
            except kopf.TemporaryError as err:
                # The API server restarting or busy: expected, and said in one line, not a traceback each.
                log.warning(
                    "refreshing %s/%s/%s failed for now (%s); the next event or resync retries", *key, err
                )
            except Exception:
                log.exception("refreshing %s/%s/%s failed; the next event or resync retries", *key)

        with self.pending_lock:
            if key in self.pending:
                return
            timer = threading.Timer(self.settings.debounce_seconds, fire)
            timer.daemon = True
            self.pending[key] = timer
        timer.start()

    def lock(self, kind: str, namespace: str, name: str) -> threading.Lock:
        """One reconcile at a time per resource, whichever event or timer started it."""
        return self.locks[(kind, namespace, name)]

    def pull(self, ip: str, path: str) -> dict[str, Any] | None:
        """GET a runtime pod's JSON endpoint; None when it does not answer (not an error)."""
        url = f"http://{ip}:{self.settings.runtime_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.settings.stats_timeout_seconds) as response:
                data = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return data if isinstance(data, dict) else None
