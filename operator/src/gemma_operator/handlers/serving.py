"""GemmaServer handlers: create/update/resume apply the rendered children (the scrape configs and the
InferencePool only while their CRDs are served); a timer repairs drift and pulls serving figures; events
of the children (Deployment, pods) refresh status at once, and a child deleted by hand is re-created."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from gemma_operator.api.v1alpha1 import GROUP, VERSION, GemmaServer
from gemma_operator.api.validation import SpecError, parse
from gemma_operator.config import Settings
from gemma_operator.handlers.common import (
    fetch_progress,
    indexed,
    now,
    reconcile_one,
    retrying,
    write_status,
)
from gemma_operator.handlers.context import Context
from gemma_operator.k8s import apply_all, prune
from gemma_operator.reconcile import serving as status_of
from gemma_operator.render import naming
from gemma_operator.render.gateway import (
    POOL_API,
    POOL_KIND,
    picker_service,
    pool_name,
    render_inference_pool,
)
from gemma_operator.render.monitoring import MONITORS, monitor_kinds, render_monitors
from gemma_operator.render.placement import resolve
from gemma_operator.render.plan import DoesNotFitError, plan_status, server_plan
from gemma_operator.render.serving import endpoint, render_server, replicas

log = logging.getLogger(__name__)
RESYNC = Settings.from_env().resync_seconds
KIND = "GemmaServer"
PLURAL = "gemmaservers"
# Children that can stop being wanted (every other child always exists): pruned when gone from spec.
OPTIONAL_CHILDREN = [("autoscaling/v2", "HorizontalPodAutoscaler")]


def reconcile(ctx: Context, obj: dict[str, Any], *, apply: bool = True) -> dict[str, Any]:
    """Bring one GemmaServer's children to the desired state (``apply``) and write its status."""
    return reconcile_one(ctx, KIND, obj, lambda c, o: _reconcile(c, o, apply=apply))


def _reconcile(ctx: Context, obj: dict[str, Any], *, apply: bool) -> dict[str, Any]:
    meta = obj["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    previous = obj.get("status") or {}
    try:
        server = parse(obj)
    except SpecError as err:
        # Touch no workload: report the fields and wait for a fixed spec.
        status = status_of.invalid_status(previous, generation, err.problems, now())
        write_status(ctx, obj, previous, status, status_of.WARNINGS)
        return status
    assert isinstance(server, GemmaServer)
    try:
        plan = server_plan(server.spec)
    except DoesNotFitError as err:
        status = status_of.invalid_status(previous, generation, [str(err)], now(), reason="DoesNotFit")
        status["plan"] = None  # no plan holds for this generation
        write_status(ctx, obj, previous, status, status_of.WARNINGS)
        return status
    pool = render_inference_pool(obj, server.spec, ctx.settings)
    pool_served = pool is not None and _installed(ctx, pool)
    if apply:
        desired = render_server(obj, server, ctx.settings)
        desired += [m for m in render_monitors(obj, ctx.settings) if _installed(ctx, m)]
        if pool is not None and pool_served:
            desired.append(pool)
        apply_all(ctx.kube, desired, ctx.settings.field_manager)
        keep = {(d["kind"], d["metadata"]["name"]) for d in desired}
        # Only the scrape configs the settings name, and pools while their CRD is served: a cluster
        # without a CRD has none of its kind to prune.
        kinds = OPTIONAL_CHILDREN + [(MONITORS[k][0], k) for k in monitor_kinds(ctx.settings)]
        if ctx.kube.has_api(POOL_API, POOL_KIND):
            kinds.append((POOL_API, POOL_KIND))
        removed = prune(
            ctx.kube,
            meta["uid"],
            namespace,
            kinds=kinds,
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
        if p.get("status", {}).get("podIP") and status_of.pod_ready(p)
        for s in [ctx.pull(p["status"]["podIP"], "/stats")]
        if s is not None
    ]
    observed = status_of.Observed(
        desired_replicas=replicas(server.spec),
        deployment=deployment,
        pods=pods,
        stats=stats,
        fetches=fetch_progress(ctx, pods),
        inference_pool=_pool_state(ctx, server, name, namespace, served=pool_served),
    )
    status = status_of.server_status(
        previous=previous,
        generation=generation,
        suspended=server.spec.suspend,
        observed=observed,
        selector=f"{naming.SERVER_LABEL}={name}",
        endpoint=endpoint(name, namespace, ctx.settings),
        accelerator=resolve(server.spec.accelerator).to_api(),
        now=now(),
    )
    status["plan"] = plan_status(plan)
    write_status(ctx, obj, previous, status, status_of.WARNINGS, announced=status_of.ANNOUNCED)
    return status


def _pool_state(
    ctx: Context, server: GemmaServer, name: str, namespace: str, *, served: bool
) -> status_of.PoolState | None:
    """The InferencePool as it is (read back, so the condition never claims a pool that is not there)."""
    picker = picker_service(name, server.spec)
    if picker is None or server.spec.inference_pool is None:
        return None
    exists = served and ctx.kube.get(POOL_API, POOL_KIND, pool_name(name), namespace) is not None
    return status_of.PoolState(
        name=pool_name(name),
        api=POOL_API,
        port=ctx.settings.runtime_port,
        picker=f"{picker}:{server.spec.inference_pool.endpoint_picker.port}",
        served=served,
        exists=exists,
    )


def _installed(ctx: Context, child: dict[str, Any]) -> bool:
    """A child of a third-party kind (scrape config, InferencePool) is applied only while its CRD is
    served; a no is asked again (installed later)."""
    api_version, kind = child["apiVersion"], child["kind"]
    return ctx.kube.has_api(api_version, kind) or ctx.kube.has_api(api_version, kind, refresh=True)


def _run(memo: kopf.Memo, body: dict[str, Any], apply: bool) -> None:
    retrying(lambda: reconcile(memo["ctx"], body, apply=apply))


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
    owner = indexed(kwargs["server_index"], namespace, labels.get(naming.SERVER_LABEL))
    if owner is None:
        return
    # A Deployment deleted by hand is re-created at once; other changes only refresh the status. The
    # timer re-applies everything, repairing other children edited or deleted by hand.
    deleted = event.get("type") == "DELETED" and body.get("kind") == "Deployment"
    ctx: Context = memo["ctx"]
    key = (KIND, owner["metadata"]["namespace"], owner["metadata"]["name"])
    # A burst of pod and Deployment events becomes one refresh, which reads the state as it is then.
    ctx.debounce(key, lambda: _run(memo, owner, apply=deleted), force=deleted)
