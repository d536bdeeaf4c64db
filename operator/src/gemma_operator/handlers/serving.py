"""GemmaServer handlers: create/update/resume apply the rendered children; a timer repairs drift and
pulls serving figures; events of the children (Deployment, pods) refresh status at once, and a child
deleted by hand is re-created."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from gemma_operator import metrics
from gemma_operator.api.v1alpha1 import API_VERSION, GROUP, VERSION, GemmaServer
from gemma_operator.api.validation import SpecError, parse
from gemma_operator.config import Settings
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import ConflictError, KubeError, TransientError, apply_all, prune
from gemma_operator.reconcile import serving as status_of
from gemma_operator.reconcile.conditions import transitions
from gemma_operator.render import naming
from gemma_operator.render.placement import resolve
from gemma_operator.render.serving import endpoint, render_server, replicas

log = logging.getLogger(__name__)
RESYNC = Settings.from_env().resync_seconds
KIND = "GemmaServer"
PLURAL = "gemmaservers"
# Children that can stop being wanted (every other child always exists): pruned when gone from spec.
OPTIONAL_CHILDREN = [("autoscaling/v2", "HorizontalPodAutoscaler")]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def reconcile(
    ctx: Context, obj: dict[str, Any], *, apply: bool = True, refetch: bool = False
) -> dict[str, Any]:
    """Bring one GemmaServer's children to the desired state (``apply``) and write its status.
    ``refetch`` reads the resource first, for callers holding a possibly stale copy."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    started = time.monotonic()
    with ctx.lock(KIND, namespace, name):
        fresh = ctx.kube.get(API_VERSION, KIND, name, namespace) if refetch else obj
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return {}
        result = "ok"
        try:
            status = _reconcile(ctx, fresh, apply=apply)
        except SpecError:
            result = "invalid"
            raise
        except KubeError:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(KIND, result).inc()
            metrics.RECONCILE_SECONDS.labels(KIND).observe(time.monotonic() - started)
        return status


def _reconcile(ctx: Context, obj: dict[str, Any], *, apply: bool) -> dict[str, Any]:
    meta = obj["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    previous = obj.get("status") or {}
    try:
        server = parse(obj)
    except SpecError as err:
        # Touch no workload: report the fields and wait for a fixed spec.
        status = status_of.invalid_status(previous, generation, err.problems, _now())
        _write_status(ctx, obj, previous, status)
        return status
    assert isinstance(server, GemmaServer)
    if apply:
        desired = render_server(obj, server, ctx.settings)
        apply_all(ctx.kube, desired, ctx.settings.field_manager)
        keep = {(d["kind"], d["metadata"]["name"]) for d in desired}
        removed = prune(
            ctx.kube,
            meta["uid"],
            namespace,
            kinds=OPTIONAL_CHILDREN,
            keep=keep,
            label_selector=f"{naming.SERVER_LABEL}={name}",
        )
        for what in removed:
            log.info("removed %s of GemmaServer %s/%s", what, namespace, name)
    deployment = ctx.kube.get("apps/v1", "Deployment", naming.child_name(name, limit=253), namespace)
    pods = ctx.kube.list("v1", "Pod", namespace, label_selector=f"{naming.SERVER_LABEL}={name}")
    stats = [
        s
        for p in pods
        if p.get("status", {}).get("podIP") and _is_ready(p)
        for s in [ctx.pull(p["status"]["podIP"], "/stats")]
        if s is not None
    ]
    observed = status_of.Observed(
        desired_replicas=replicas(server.spec), deployment=deployment, pods=pods, stats=stats
    )
    status = status_of.server_status(
        previous=previous,
        generation=generation,
        suspended=server.spec.suspend,
        observed=observed,
        selector=f"{naming.SERVER_LABEL}={name}",
        endpoint=endpoint(name, namespace, ctx.settings),
        accelerator=resolve(server.spec.accelerator).to_api(),
        now=_now(),
    )
    _write_status(ctx, obj, previous, status)
    return status


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _write_status(
    ctx: Context, obj: dict[str, Any], previous: dict[str, Any], status: dict[str, Any]
) -> None:
    if all(previous.get(k) == v for k, v in status.items()):
        return
    meta = obj["metadata"]
    ctx.kube.patch_status(
        API_VERSION,
        KIND,
        meta["name"],
        meta["namespace"],
        status=status,
        field_manager=ctx.settings.field_manager,
    )
    for event in transitions(
        previous.get("conditions", []), status.get("conditions", []), status_of.WARNINGS
    ):
        ctx.recorder.emit(ctx.kube, obj, event.type, event.reason, event.message)


def _run(memo: kopf.Memo, body: dict[str, Any], apply: bool, refetch: bool = False) -> None:
    ctx: Context = memo["ctx"]
    try:
        reconcile(ctx, body, apply=apply, refetch=refetch)
    except (TransientError, ConflictError) as err:
        raise kopf.TemporaryError(str(err), delay=getattr(err, "retry_after", None) or 5) from err


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def server_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, dict(body), apply=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC, initial_delay=RESYNC)
def server_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, dict(body), apply=True)


@kopf.index(GROUP, VERSION, PLURAL)
def server_index(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): dict(body)}


def _owner(
    labels: Mapping[str, str], namespace: str | None, index: kopf.Index[Any, Any]
) -> dict[str, Any] | None:
    name = labels.get(naming.SERVER_LABEL)
    if not name or (namespace, name) not in index:
        return None
    for body in index[(namespace, name)]:
        return dict(body)
    return None


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/name": "gemma-server"})
@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/name": "gemma-server"})
def server_child_event(
    *,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    owner = _owner(labels, namespace, kwargs["server_index"])
    if owner is None:
        return
    # A Deployment deleted by hand is re-created at once; other changes only refresh the status. The
    # timer re-applies everything, repairing other children edited or deleted by hand.
    deleted = event.get("type") == "DELETED" and body.get("kind") == "Deployment"
    ctx: Context = memo["ctx"]
    key = (KIND, owner["metadata"]["namespace"], owner["metadata"]["name"])
    # A burst of pod and Deployment events becomes one refresh, which reads the state as it is then.
    ctx.debounce(key, lambda: _run(memo, owner, apply=deleted, refetch=True), force=deleted)
