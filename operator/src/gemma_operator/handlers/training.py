"""GemmaTraining handlers: create/update/resume apply the config, the headless Service and the current
attempt's Job (or JobSet); a timer pulls progress from pod 0 (its termination message once it exited)
and reads the workload's FailedCreate Events; Job and pod events refresh status at once.
When the slice fails, status records the restart first, then the next attempt's workload replaces the
failed one, so a crash in between never counts a restart twice or leaves two attempts running."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import kopf

from gemma_operator.api.training import GemmaTrainingSpec
from gemma_operator.api.v1alpha1 import GROUP, VERSION, GemmaTraining
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
from gemma_operator.k8s import ConflictError, KubeError, TransientError, apply_all
from gemma_operator.reconcile import training as status_of
from gemma_operator.render import naming
from gemma_operator.render.placement import resolve
from gemma_operator.render.training import (
    ATTEMPT_LABEL,
    INDEX_ANNOTATION,
    JOBSET_API,
    SLICE_ANNOTATION,
    job_name,
    render_workload,
)

log = logging.getLogger(__name__)
KIND = "GemmaTraining"
PLURAL = "gemmatrainings"
PROGRESS = Settings.from_env().progress_seconds
NO_JOBSET = (
    "numSlices > 1 runs as a JobSet, but the JobSet API (jobset.x-k8s.io/v1alpha2) is not installed in "
    "this cluster: install JobSet, or train on one slice (numSlices: 1)"
)


def _workload_kind(spec: GemmaTrainingSpec) -> tuple[str, str]:
    return (JOBSET_API, "JobSet") if spec.accelerator.num_slices > 1 else ("batch/v1", "Job")


def reconcile(ctx: Context, obj: dict[str, Any]) -> dict[str, Any]:
    return reconcile_one(ctx, KIND, obj, _reconcile)


def _terminal(status: Mapping[str, Any]) -> bool:
    failed: Mapping[str, Any] = next(
        (c for c in status.get("conditions", []) if c.get("type") == "Failed"), {}
    )
    return status.get("phase") == "Succeeded" or failed.get("reason") == "MaxRestartsExceeded"


def _reconcile(ctx: Context, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    previous = obj.get("status") or {}
    fm = ctx.settings.field_manager
    try:
        training = parse(obj)
    except SpecError as err:
        status = status_of.invalid_status(previous, generation, err.problems, now())
        write_status(ctx, obj, previous, status, status_of.WARNINGS)
        return status
    assert isinstance(training, GemmaTraining)
    spec = training.spec
    api_version, kind = _workload_kind(spec)
    blocked = NO_JOBSET if kind == "JobSet" and not _jobset_installed(ctx) else None
    refused: str | None = None
    attempt = int(previous.get("attempt", 0))
    workload_name = job_name(
        name, attempt, slices=spec.accelerator.num_slices, hosts=resolve(spec.accelerator).hosts
    )
    if blocked is None and not _terminal(previous):
        config, service, workload = render_workload(obj, training, ctx.settings, attempt)
        apply_all(ctx.kube, [config, service], fm)
        current = ctx.kube.get(api_version, kind, workload_name, namespace)
        if current is None:
            refused = _create(ctx, workload, fm)
        elif bool(current.get("spec", {}).get("suspend")) != spec.suspend:
            # A Job's template is immutable once created; suspend is the one field that toggles (Kueue too).
            ctx.kube.patch(
                api_version,
                kind,
                workload_name,
                namespace,
                body={"spec": {"suspend": spec.suspend}},
                field_manager=fm,
            )
    observed_workload = None if blocked else ctx.kube.get(api_version, kind, workload_name, namespace)
    selector = f"{naming.TRAINING_LABEL}={name},{ATTEMPT_LABEL}={attempt}"
    pods = [
        p
        for p in ctx.kube.list("v1", "Pod", namespace, label_selector=selector)
        if not p["metadata"].get("deletionTimestamp")
    ]
    placement_hosts = resolve(spec.accelerator).hosts * spec.accelerator.num_slices
    observed = status_of.Observed(
        hosts=placement_hosts,
        workload=observed_workload,
        pods=pods,
        progress=_progress(ctx, pods),
        fetches=fetch_progress(ctx, pods),
        refused=refused,
        # Pods missing: the controller may have been refused creating them (its Events say why).
        events=_warnings(ctx, namespace, observed_workload, name, attempt)
        if len(pods) < placement_hosts
        else [],
    )
    decision = status_of.decide(
        previous=previous,
        generation=generation,
        suspended=spec.suspend,
        max_restarts=spec.failure_policy.max_restarts,
        observed=observed,
        now=now(),
        accelerator=resolve(spec.accelerator).to_api(),
        blocked=blocked,
    )
    write_status(ctx, obj, previous, decision.status, status_of.WARNINGS)
    if decision.restart is not None:
        kind_of_event: Literal["Normal", "Warning"] = "Warning" if decision.restart.counted else "Normal"
        counted = "counted against maxRestarts" if decision.restart.counted else "not counted (disruption)"
        ctx.recorder.emit(
            ctx.kube, obj, kind_of_event, "SliceRestarted", f"{decision.restart.reason}; {counted}"
        )
        *_, workload_next = render_workload(obj, training, ctx.settings, attempt + 1)
        ctx.kube.apply(workload_next, fm)
    if blocked is None and refused is None:  # the failed attempt stays until its successor exists
        _delete_old_attempts(ctx, obj, (api_version, kind), int(decision.status["attempt"]))
    return decision.status


def _jobset_installed(ctx: Context) -> bool:
    """A yes is cached; a no is asked again, since JobSet may be installed after the operator started."""
    return ctx.kube.has_api(JOBSET_API, "JobSet") or ctx.kube.has_api(JOBSET_API, "JobSet", refresh=True)


def _create(ctx: Context, workload: dict[str, Any], field_manager: str) -> str | None:
    """Create the attempt's Job or JobSet; a refusal that a retry would only repeat (an admission
    webhook, a quota, validation, RBAC) is returned for status, and the next reconcile tries again."""
    try:
        ctx.kube.apply(workload, field_manager)
    except (TransientError, ConflictError):
        raise
    except KubeError as err:
        meta = workload["metadata"]
        log.warning("%s %s/%s refused: %s", workload["kind"], meta["namespace"], meta["name"], err)
        return f"the API server refused to create {workload['kind']} {meta['name']}: {err}"
    return None


def _progress(ctx: Context, pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pod 0's /progress (the runtime serves it on process 0 only), or its final figures once exited."""
    for pod in pods:
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get(INDEX_ANNOTATION) != "0" or annotations.get(SLICE_ANNOTATION, "0") != "0":
            continue
        ip = pod.get("status", {}).get("podIP")
        if ip and pod.get("status", {}).get("phase") == "Running":
            return ctx.pull(ip, "/progress")
        return status_of.final_progress(pod)
    return None


def _warnings(
    ctx: Context, namespace: str, workload: dict[str, Any] | None, name: str, attempt: int
) -> list[dict[str, Any]]:
    """Warning Events of the workload and, for a JobSet, of its Jobs (where pod creation fails)."""
    if workload is None:
        return []
    owners = [workload]
    if workload.get("kind") == "JobSet":
        selector = f"{naming.TRAINING_LABEL}={name},{ATTEMPT_LABEL}={attempt}"
        owners += ctx.kube.list("batch/v1", "Job", namespace, label_selector=selector)
    events: list[dict[str, Any]] = []
    for owner in owners:
        uid = owner["metadata"].get("uid")
        if uid:
            selector = f"involvedObject.uid={uid},type=Warning"
            events += ctx.kube.list("v1", "Event", namespace, field_selector=selector)
    return events


def _delete_old_attempts(ctx: Context, obj: dict[str, Any], kinds: tuple[str, str], attempt: int) -> None:
    """Remove workloads of earlier attempts (the current one stays, also when it failed for good)."""
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    api_version, kind = kinds
    selector = f"{naming.TRAINING_LABEL}={name}"
    for workload in ctx.kube.list(api_version, kind, namespace, label_selector=selector):
        if workload["metadata"].get("labels", {}).get(ATTEMPT_LABEL) != str(attempt):
            ctx.kube.delete(api_version, kind, workload["metadata"]["name"], namespace)


def _run(memo: kopf.Memo, body: dict[str, Any]) -> None:
    retrying(lambda: reconcile(memo["ctx"], body))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def training_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, dict(body))


@kopf.timer(GROUP, VERSION, PLURAL, interval=PROGRESS, initial_delay=PROGRESS)
def training_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, dict(body))


@kopf.index(GROUP, VERSION, PLURAL)
def training_index(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/name": "gemma-training"})
@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/name": "gemma-training"})
def training_child_event(
    *, namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **kwargs: Any
) -> None:
    owner = indexed(kwargs["training_index"], namespace, labels.get(naming.TRAINING_LABEL))
    if owner is None:
        return
    ctx: Context = memo["ctx"]
    key = (KIND, owner["metadata"]["namespace"], owner["metadata"]["name"])
    ctx.debounce(key, lambda: _run(memo, owner))
