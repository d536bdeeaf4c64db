"""Operator start-up: kopf settings, the one cluster client, metrics, and how kopf logs in."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import kopf

from gemma_operator import metrics
from gemma_operator.config import Settings
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import EventRecorder, connect

KOPF_PREFIX = "kopf.gemma.ai"


class EndlessBackoffs:
    """Seconds between kopf's retries of one API request: kopf's own ramp, then every ``cap`` seconds,
    for ever. kopf's default gives up after 54 s, and a watch whose listing gives up is never started
    again: the operator stays healthy but deaf to that kind until it restarts (nolar/kopf#996). An API
    server outage outlasts 54 s in a zonal control-plane upgrade. Iterable again per request (kopf
    iterates it once per request), and unsized, so kopf counts no last attempt."""

    def __init__(self, ramp: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13), cap: float = 20) -> None:
        self.ramp = ramp
        self.cap = cap

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.ramp, itertools.repeat(self.cap))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = Settings.from_env()
    logging.getLogger().setLevel(config.log_level.upper())
    # kopf's own bookkeeping goes to annotations under our prefix, never into status (one writer).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = EndlessBackoffs()
    kube = connect(config.kubeconfig)
    memo["ctx"] = Context(kube=kube, settings=config, recorder=EventRecorder())
    metrics.serve(config.metrics_port, config.bind_address)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.get("ctx")
    if ctx is not None:
        ctx.kube.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config (the CLI sets KUBECONFIG
    # from --kubeconfig), the same sources gemma_operator.k8s.connect() uses.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
