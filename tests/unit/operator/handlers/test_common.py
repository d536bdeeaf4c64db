"""reconcile_one: every reconcile decides on the resource as it is when it holds the lock, not on the
copy its caller took before waiting for it."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, cast

import kopf
import pytest

from gemma_operator.config import Settings
from gemma_operator.handlers.common import reconcile_one
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import EventRecorder, Kube
from tests.cluster.harness.wait import wait_for


class _Store:
    """The one call reconcile_one makes to the API server: a GET of the resource, from this dict."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)


TRAINING = {
    "apiVersion": "gemma.ai/v1alpha1",
    "kind": "GemmaTraining",
    "metadata": {"name": "t", "namespace": "team", "uid": "u1"},
    "status": {"attempt": 0, "restarts": 0},
}


def test_a_copy_taken_before_the_lock_does_not_undo_the_restart_counted_meanwhile() -> None:
    store = _Store(copy.deepcopy(TRAINING))
    ctx = Context(kube=cast(Kube, store), settings=Settings(), recorder=cast(EventRecorder, None))
    # A timer's copy of the body, taken while another reconcile held the lock ...
    stale = copy.deepcopy(TRAINING)

    def count_a_restart(_: Context, obj: dict[str, Any]) -> dict[str, Any]:
        store.obj["status"] = {"attempt": obj["status"]["attempt"] + 1, "restarts": 1}
        return {}

    # ... which counted a restart (status written, as the training handler does, before the next Job).
    reconcile_one(ctx, "GemmaTraining", copy.deepcopy(TRAINING), count_a_restart)
    seen: list[dict[str, Any]] = []

    def decide(_: Context, obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(obj["status"])
        return {}

    reconcile_one(ctx, "GemmaTraining", stale, decide)
    assert seen == [{"attempt": 1, "restarts": 1}]


def test_a_resource_deleted_meanwhile_is_not_reconciled() -> None:
    store = _Store(copy.deepcopy(TRAINING))
    store.obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ctx = Context(kube=cast(Kube, store), settings=Settings(), recorder=cast(EventRecorder, None))

    def never(_: Context, obj: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a resource being deleted was reconciled")

    assert reconcile_one(ctx, "GemmaTraining", copy.deepcopy(TRAINING), never) == {}


def test_a_refresh_that_fails_for_now_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    ctx = Context(
        kube=cast(Kube, None), settings=Settings(debounce_seconds=0.01), recorder=cast(EventRecorder, None)
    )
    done = threading.Event()

    def unreachable() -> None:
        done.set()
        raise kopf.TemporaryError("cannot reach the API server: connection refused", delay=5)

    with caplog.at_level(logging.WARNING, logger="gemma_operator.handlers.context"):
        ctx.debounce(("GemmaServer", "team", "s"), unreachable)
        assert done.wait(10)
        wait_for(lambda: caplog.records, 10, "the warning")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None  # an API server restart is expected: no traceback per resource
    assert "GemmaServer/team/s failed for now (cannot reach the API server" in record.getMessage()
