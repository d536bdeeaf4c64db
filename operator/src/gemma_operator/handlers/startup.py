"""Operator start-up: kopf settings, the one cluster client, metrics, and how kopf logs in."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gemma_operator import metrics
from gemma_operator.config import Settings
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import EventRecorder, connect

KOPF_PREFIX = "kopf.gemma.ai"


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
