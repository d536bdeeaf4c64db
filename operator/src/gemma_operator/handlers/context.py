"""What every handler needs, built once at start-up and kept in kopf's operator-level memo."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

from gemma_operator.config import Settings
from gemma_operator.k8s import EventRecorder, Kube


@dataclasses.dataclass
class Context:
    kube: Kube
    settings: Settings
    recorder: EventRecorder
    locks: defaultdict[tuple[str, str, str], threading.Lock] = dataclasses.field(
        default_factory=lambda: defaultdict(threading.Lock)
    )

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
