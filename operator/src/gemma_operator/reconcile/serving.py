"""A GemmaServer's status from its Deployment, its pods and their /stats: Ready only when the
requested replicas serve, Progressing during a rollout, Degraded with the real reason (the scheduler's
message, a crash loop, an image that cannot be pulled, out of memory)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from gemma_operator.api.conditions import DEGRADED, INFERENCE_POOL_APPLIED, PROGRESSING, READY, SUSPENDED
from gemma_operator.reconcile import sources
from gemma_operator.reconcile.conditions import Cond, merge
from gemma_operator.reconcile.pods import pod_problem

WARNINGS = {READY: False, DEGRADED: True, INFERENCE_POOL_APPLIED: False}  # which status is bad news
# Conditions that appear with an opt-in field: their first status is news (an Event) even when False.
ANNOUNCED = (INFERENCE_POOL_APPLIED,)


@dataclasses.dataclass(frozen=True)
class PoolState:
    """What the operator knows of the InferencePool of a server with spec.inferencePool."""

    name: str
    api: str  # e.g. inference.networking.k8s.io/v1
    port: int  # the runtime's port, the pool's target port
    picker: str  # the endpoint picker's Service, host:port
    served: bool  # the API server serves the InferencePool CRD
    exists: bool  # the pool was read back after the apply


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the operator saw of one GemmaServer's children."""

    desired_replicas: int
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]
    stats: Sequence[Mapping[str, Any]] = ()
    fetches: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # pod -> /fetch
    inference_pool: PoolState | None = None  # only with spec.inferencePool


def conditions(suspended: bool, observed: Observed) -> list[Cond]:
    deployment = observed.deployment or {}
    dstatus = deployment.get("status", {})
    want = observed.desired_replicas
    ready = int(dstatus.get("readyReplicas", 0) or 0)
    updated = int(dstatus.get("updatedReplicas", 0) or 0)
    total = int(dstatus.get("replicas", 0) or 0)
    current = deployment and deployment.get("metadata", {}).get("generation") == dstatus.get(
        "observedGeneration"
    )
    problem = pod_problem(observed.pods)
    replica_failure = next(
        (
            c
            for c in dstatus.get("conditions", [])
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
        ),
        None,
    )
    deadline = next(
        (
            c
            for c in dstatus.get("conditions", [])
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        ),
        None,
    )
    source = sources.condition(observed.pods, observed.fetches, loaded=pod_ready)
    if suspended:
        return [
            Cond(READY, False, "Suspended", "spec.suspend is true: scaled to zero"),
            Cond(PROGRESSING, False, "Suspended", ""),
            Cond(DEGRADED, False, "Suspended", ""),
            Cond(SUSPENDED, True, "Suspended", "spec.suspend is true: scaled to zero"),
            source,
        ]
    serving = (
        bool(deployment)
        and bool(current)
        and want > 0
        and ready >= want
        and updated >= want
        and total == updated
    )
    rolling = not serving and not (deployment and want == 0 and total == 0)
    if source.reason == "Failed":  # the fetch's own error says more than Init:CrashLoopBackOff
        degraded = Cond(DEGRADED, True, "SourceFailed", source.message)
    elif problem is not None:
        degraded = Cond(DEGRADED, True, problem[0], problem[1])
    elif replica_failure is not None:  # pods cannot even be created (quota, missing ServiceAccount, ...)
        degraded = Cond(
            DEGRADED,
            True,
            str(replica_failure.get("reason", "FailedCreate")),
            str(replica_failure.get("message", "")),
        )
    elif deadline is not None:
        degraded = Cond(DEGRADED, True, "ProgressDeadlineExceeded", str(deadline.get("message", "")))
    else:
        degraded = Cond(DEGRADED, False, "AsExpected", "")
    if serving:
        ready_cond = Cond(READY, True, "Serving", f"{ready}/{want} replicas serve")
    elif want == 0:
        ready_cond = Cond(READY, False, "ScaledToZero", "spec.replicas is 0")
    else:
        ready_cond = Cond(READY, False, "NotReady", f"{ready}/{want} replicas ready")
    progressing = (
        Cond(PROGRESSING, True, "RollingOut", f"{updated}/{want} updated, {ready}/{want} ready")
        if rolling and want > 0
        else Cond(PROGRESSING, False, "Complete", "")
    )
    return [ready_cond, progressing, degraded, Cond(SUSPENDED, False, "Active", ""), source]


def pool_condition(pool: PoolState) -> Cond:
    """InferencePoolApplied: True only once the pool was read back; False says what is missing."""
    if not pool.served:
        return Cond(
            INFERENCE_POOL_APPLIED,
            False,
            "CRDNotInstalled",
            f"spec.inferencePool is set, but this cluster does not serve InferencePool ({pool.api}): install "
            "the Gateway API Inference Extension's CRDs (GKE Inference Gateway); the operator applies the "
            "pool once the CRD is served. The server serves as before, through its Service.",
        )
    if not pool.exists:
        return Cond(INFERENCE_POOL_APPLIED, False, "Pending", f"InferencePool {pool.name} is not applied yet")
    return Cond(
        INFERENCE_POOL_APPLIED,
        True,
        "Applied",
        f"InferencePool {pool.name} selects this server's pods on port {pool.port}; its endpoint picker is "
        f"Service {pool.picker}, which the operator does not deploy",
    )


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def phase(conds: Sequence[Cond]) -> str:
    by_type = {c.type: c for c in conds}
    if by_type[SUSPENDED].status:
        return "Suspended"
    if by_type[DEGRADED].status:
        return "Degraded"
    if by_type[READY].status:
        return "Ready"
    if by_type[PROGRESSING].status:
        return "Progressing"
    return "Pending"


def serving_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    if not stats:
        return None
    out: dict[str, Any] = {
        "requestsRunning": sum(int(s.get("requests_running", 0)) for s in stats),
        "requestsWaiting": sum(int(s.get("requests_waiting", 0)) for s in stats),
        "generatedTokensPerSecond": round(
            sum(float(s.get("generated_tokens_per_second", 0.0)) for s in stats), 3
        ),
    }
    ttft = sorted(
        float(s["time_to_first_token_p50_seconds"])
        for s in stats
        if s.get("time_to_first_token_p50_seconds") is not None
    )
    if ttft:
        out["timeToFirstTokenP50Seconds"] = ttft[len(ttft) // 2]
    return out


def server_status(
    *,
    previous: Mapping[str, Any],
    generation: int,
    suspended: bool,
    observed: Observed,
    selector: str,
    endpoint: str,
    accelerator: Mapping[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    conds = conditions(suspended, observed)
    if observed.inference_pool is not None:
        conds.append(pool_condition(observed.inference_pool))
    deployment_status = (observed.deployment or {}).get("status", {})
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase(conds),
        "conditions": merge(previous.get("conditions", []), conds, generation, now),
        "replicas": int(deployment_status.get("replicas", 0) or 0),
        "readyReplicas": int(deployment_status.get("readyReplicas", 0) or 0),
        "selector": selector,
        "endpoint": endpoint,
        "accelerator": dict(accelerator),
    }
    stats = serving_stats(observed.stats)
    if stats is not None:
        status["serving"] = stats
    return status


def invalid_status(
    previous: Mapping[str, Any],
    generation: int,
    problems: Sequence[str],
    now: datetime.datetime,
    *,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """A spec that failed validation (or, reason DoesNotFit, the memory plan): say which fields, and leave
    every workload as it was."""
    message = ("invalid spec: " if reason == "InvalidSpec" else "") + "; ".join(problems)
    conds = [
        Cond(READY, False, reason, message),
        Cond(PROGRESSING, False, reason, ""),
        Cond(DEGRADED, True, reason, message),
        Cond(SUSPENDED, False, "Active", ""),
    ]
    return {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": merge(previous.get("conditions", []), conds, generation, now),
    }
