"""What both kinds' handlers share: one reconcile at a time per resource with its metrics, status
writes with their Events, and kopf's retry for transient API errors."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import kopf

from gemma_operator import metrics
from gemma_operator.api.v1alpha1 import API_VERSION
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import ConflictError, KubeError, TransientError
from gemma_operator.reconcile import sources
from gemma_operator.reconcile.conditions import transitions

Step = Callable[[Context, dict[str, Any]], dict[str, Any]]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def reconcile_one(ctx: Context, kind: str, obj: dict[str, Any], step: Step) -> dict[str, Any]:
    """Run ``step`` on the resource as it is now, read under its lock, counting and timing it.

    Every caller's copy may be stale, not only an index entry's: kopf's body for a timer or an update is
    taken before the lock is waited for, and the reconcile holding the lock may meanwhile write a status
    that counts a slice restart. Deciding on the older status would count that restart again, or re-create
    the failed attempt's workload and write the count back to zero. So ``step`` always gets a fresh read."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    started = time.monotonic()
    with ctx.lock(kind, namespace, name):
        fresh = ctx.kube.get(API_VERSION, kind, name, namespace)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return {}
        result = "ok"
        try:
            return step(ctx, fresh)
        except KubeError:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(kind, result).inc()
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)


def write_status(
    ctx: Context,
    obj: dict[str, Any],
    previous: Mapping[str, Any],
    status: dict[str, Any],
    warnings: Mapping[str, bool],
    *,
    announced: Collection[str] = (),
) -> None:
    """Patch the status when it changed, with an Event for each condition that moved (see
    :func:`~gemma_operator.reconcile.conditions.transitions`)."""
    if all(previous.get(k) == v for k, v in status.items()):
        return
    meta = obj["metadata"]
    fm = ctx.settings.field_manager
    ctx.kube.patch_status(
        API_VERSION, obj["kind"], meta["name"], meta["namespace"], status=status, field_manager=fm
    )
    conditions = status.get("conditions", [])
    for event in transitions(previous.get("conditions", []), conditions, warnings, announced):
        ctx.recorder.emit(ctx.kube, obj, event.type, event.reason, event.message)


def retrying(action: Callable[[], object]) -> None:
    """Run a reconcile from a kopf handler; a transient API error becomes kopf's retry with a delay."""
    try:
        action()
    except (TransientError, ConflictError) as err:
        raise kopf.TemporaryError(str(err), delay=getattr(err, "retry_after", None) or 5) from err


def indexed(index: kopf.Index[Any, Any], namespace: str | None, name: str | None) -> dict[str, Any] | None:
    """The resource an index holds for (namespace, name), if any."""
    if not name or (namespace, name) not in index:
        return None
    for body in index[(namespace, name)]:
        return dict(body)
    return None


def fetch_progress(ctx: Context, pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod name -> the /fetch answer of its running fetch init container (pods downloading only)."""
    out = {}
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if ip and sources.fetching(pod):
            answer = ctx.pull(ip, sources.FETCH_PATH)
            if answer is not None:
                out[pod["metadata"]["name"]] = answer
    return out
