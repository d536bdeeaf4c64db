"""Stop the operator when kopf gives up on a watch, so that its Deployment starts it again.

kopf runs one task per watched kind. When that task fails (an error kopf does not retry, such as a 404
from a custom resource's endpoint while a restarted API server is still loading its CRDs), kopf logs
"Watcher for ... has failed" and never starts it again: the process stays alive and its liveness probe
answers, but it no longer sees that kind. A crash that the kubelet restarts is the honest outcome."""

from __future__ import annotations

import logging
import threading

# kopf's guard for its per-kind watch tasks logs through this logger.
KOPF_ORCHESTRATION_LOGGER = "kopf._core.reactor.orchestration"

log = logging.getLogger(__name__)


class WatchFailures(logging.Handler):
    """Collects the kinds whose watch kopf gave up on and sets ``stop``, kopf's stop flag."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(level=logging.ERROR)
        self.stop = stop
        self.failed: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not (message.startswith("Watcher for ") and " has failed" in message):
            return
        what = message.removeprefix("Watcher for ").split(" has failed", 1)[0]
        self.failed.append(what)
        log.error("the watch of %s failed and kopf will not start it again; stopping the operator", what)
        self.stop.set()


def install(stop: threading.Event) -> WatchFailures:
    handler = WatchFailures(stop)
    logging.getLogger(KOPF_ORCHESTRATION_LOGGER).addHandler(handler)
    return handler
