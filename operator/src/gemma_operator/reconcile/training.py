"""A GemmaTraining's status and its one decision, from its current attempt's Job (or JobSet), the pods,
pod 0's /progress (or, once its runtime has exited, the same figures from its termination message) and
the workload's FailedCreate Events: Pending -> Running -> Succeeded or Failed, Suspended; Degraded while
pods cannot be created or scheduled; and when the slice failed, whether to restart it and whether that
restart counts against failurePolicy.maxRestarts.

Disruptions do not count: a pod with the DisruptionTarget condition (preemption, eviction for node
maintenance, Kueue preemption) or a runtime that exits with RETRY_EXIT_CODE (it asks for a fresh slice,
e.g. after losing a host). Any other failure is an application error and counts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gemma_operator.api.conditions import DEGRADED, FAILED, RUNNING, SUCCEEDED, SUSPENDED
from gemma_operator.api.training import RETRY_EXIT_CODE
from gemma_operator.reconcile import sources
from gemma_operator.reconcile.conditions import Cond, merge, timestamp
from gemma_operator.reconcile.pods import create_failure, pod_problem, runtime_refusal

HISTORY = 20
WARNINGS = {FAILED: True, DEGRADED: True}
RUNTIME_CONTAINER = "runtime"


@dataclasses.dataclass(frozen=True)
class Observed:
    hosts: int  # pods of the slice(s)
    workload: Mapping[str, Any] | None  # the current attempt's Job or JobSet
    pods: Sequence[Mapping[str, Any]]
    progress: Mapping[str, Any] | None = None
    fetches: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # pod -> /fetch
    events: Sequence[Mapping[str, Any]] = ()  # Warning Events of the workload (and a JobSet's Jobs)
    refused: str | None = None  # the API server's answer when it refused to create the workload


def final_progress(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """Pod 0's last /progress document, which the runtime leaves as its termination message when it
    exits; None while it runs, or when the message is not that document (a crash's last log lines)."""
    for container in pod.get("status", {}).get("containerStatuses", []) or []:
        if container.get("name") != RUNTIME_CONTAINER:
            continue
        message = (container.get("state", {}).get("terminated") or {}).get("message")
        try:
            document = json.loads(message) if message else None
        except ValueError:
            return None
        if isinstance(document, dict) and "step" in document and "total_steps" in document:
            return document
    return None


@dataclasses.dataclass(frozen=True)
class Restart:
    reason: str
    counted: bool


@dataclasses.dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    restart: Restart | None = None


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def failure(pods: Sequence[Mapping[str, Any]], workload: Mapping[str, Any] | None = None) -> Restart:
    """Why the slice failed, and whether the restart counts. The Job's own verdict comes first (its pod
    failure policy names the rule that matched, and a preempted pod may already be gone); the pods
    tell the rest."""
    failed = _condition(workload or {}, "Failed") or {}
    message = str(failed.get("message", ""))
    if failed.get("reason") == "PodFailurePolicy" and "rule at index 0" in message:
        return Restart(f"DisruptionTarget ({message})", counted=False)
    if failed.get("reason") == "PodFailurePolicy" and "rule at index 1" in message:
        return Restart(f"RetryRequested (exit code {RETRY_EXIT_CODE}: {message})", counted=False)
    for pod in pods:
        cond = _condition(pod, "DisruptionTarget")
        if cond is not None:
            name = pod.get("metadata", {}).get("name", "?")
            return Restart(
                f"DisruptionTarget ({cond.get('reason', 'disrupted')}) on pod {name}", counted=False
            )
    for pod in pods:
        why = _pod_failure(pod)
        if why is not None:
            return why
    return Restart("SliceFailed (a pod of the slice failed)", counted=True)


def _pod_failure(pod: Mapping[str, Any]) -> Restart | None:
    """A fetch or runtime container of ``pod`` that exited non-zero: the fetch's error names the URI."""
    fetch = sources.failure(pod)
    if fetch is not None:
        return Restart(f"SourceFailed ({fetch})", counted=True)
    name = pod.get("metadata", {}).get("name", "?")
    for container in pod.get("status", {}).get("containerStatuses", []) or []:
        terminated = container.get("state", {}).get("terminated") or {}
        code = terminated.get("exitCode")
        if code == RETRY_EXIT_CODE:
            return Restart(f"RetryRequested (exit code {code}) on pod {name}", counted=False)
        refused = runtime_refusal(container)
        if refused is not None and code not in (None, 0):  # the runtime's own reason, e.g. AcceleratorMissing
            return Restart(f"{refused[0]} ({refused[1]}) on pod {name}", counted=True)
        if code not in (None, 0):
            return Restart(
                f"PodFailed (exit code {code}, {terminated.get('reason', 'Error')}) on pod {name}",
                counted=True,
            )
    return None


def _running(observed: Observed) -> bool:
    # Hosts that finished still count: the Job's Complete condition follows a moment later.
    started = [p for p in observed.pods if p.get("status", {}).get("phase") in ("Running", "Succeeded")]
    return len(started) >= observed.hosts


def _progress(data: Mapping[str, Any]) -> dict[str, Any]:
    keys = {
        "step": "step",
        "total_steps": "totalSteps",
        "loss": "loss",
        "tokens_per_second": "tokensPerSecond",
        "mfu": "mfu",
        "eta_seconds": "etaSeconds",
    }
    out = {wire: data[key] for key, wire in keys.items() if data.get(key) is not None}
    if "eta_seconds" in data and data["eta_seconds"] is not None:
        out["etaSeconds"] = int(data["eta_seconds"])
    return out


def _conditions(true: str | None, reason: str, message: str = "") -> list[Cond]:
    """The four conditions, ``true`` (if any) set with ``reason`` and ``message``; Suspended says so."""
    out = []  # Degraded is added by decide
    for kind in (RUNNING, SUCCEEDED, FAILED, SUSPENDED):
        if kind == true:
            out.append(Cond(kind, True, reason, message))
        elif kind == SUSPENDED:
            out.append(Cond(kind, False, "Active", ""))
        else:
            out.append(Cond(kind, False, reason, message if kind == RUNNING and true is None else ""))
    return out


def _after_failure(
    status: dict[str, Any], observed: Observed, max_restarts: int, now: datetime.datetime
) -> tuple[str, list[Cond], Restart | None]:
    why = failure(observed.pods, observed.workload)
    attempt, restarts = status["attempt"], status["restarts"]
    if why.counted and restarts >= max_restarts:
        status.setdefault("completionTime", timestamp(now))
        message = f"failurePolicy.maxRestarts ({max_restarts}) exhausted; last failure: {why.reason}"
        return "Failed", _conditions(FAILED, "MaxRestartsExceeded", message), None
    status["attempt"] = attempt + 1
    status["restarts"] = restarts + int(why.counted)
    entry = {"time": timestamp(now), "reason": why.reason, "counted": why.counted}
    status["restartHistory"] = [*status["restartHistory"], entry][-HISTORY:]
    message = f"restarting the slice (attempt {attempt + 1}): {why.reason}"
    return "Pending", _conditions(None, "Restarting", message), why


def decide(
    *,
    previous: Mapping[str, Any],
    generation: int,
    suspended: bool,
    max_restarts: int,
    observed: Observed,
    now: datetime.datetime,
    accelerator: Mapping[str, Any],
    blocked: str | None = None,
) -> Decision:
    """The new status, and a restart when the slice failed and may be retried. ``blocked`` is a reason
    the workload cannot be created at all (e.g. the JobSet API is missing)."""
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "accelerator": dict(accelerator),
        "attempt": int(previous.get("attempt", 0)),
        "restarts": int(previous.get("restarts", 0)),
        "restartHistory": list(previous.get("restartHistory", [])),
    }
    status.update(
        {
            k: previous[k]
            for k in ("startTime", "completionTime", "progress", "lastCheckpoint")
            if k in previous
        }
    )
    if observed.progress:
        status["progress"] = _progress(observed.progress)
        checkpoint = observed.progress.get("last_checkpoint")
        if isinstance(checkpoint, Mapping) and checkpoint.get("step") is not None:
            status["lastCheckpoint"] = {
                k: checkpoint[k] for k in ("step", "uri", "time") if checkpoint.get(k) is not None
            }
    workload = observed.workload or {}
    restart: Restart | None = None
    problem: tuple[str, str] | None = None  # Degraded: why a pending slice cannot start
    if blocked is not None:
        phase, conds = "Failed", _conditions(FAILED, "Blocked", blocked)
    elif (
        previous.get("phase") == "Succeeded"
        or _condition(workload, "Complete")
        or _condition(workload, "Completed")
    ):
        phase, conds = "Succeeded", _conditions(SUCCEEDED, "Completed", "every host finished")
        status.setdefault(
            "completionTime", workload.get("status", {}).get("completionTime") or timestamp(now)
        )
    elif (
        _keep(previous, FAILED).reason == "MaxRestartsExceeded"
    ):  # terminal: the failed Job stays for debugging
        phase, conds = "Failed", [_keep(previous, c) for c in (RUNNING, SUCCEEDED, FAILED, SUSPENDED)]
    elif _condition(workload, "Failed"):
        phase, conds, restart = _after_failure(status, observed, max_restarts, now)
    elif suspended:
        phase = "Suspended"
        conds = _conditions(SUSPENDED, "Suspended", "spec.suspend is true: pods stopped, progress kept")
    elif workload and _running(observed):
        phase = "Running"
        status.setdefault("startTime", timestamp(now))
        step = status.get("progress", {}).get("step")
        message = f"{observed.hosts} hosts running" + (f", step {step}" if step is not None else "")
        conds = _conditions(RUNNING, "Running", message)
    else:
        phase = "Pending"
        running = sum(1 for p in observed.pods if p.get("status", {}).get("phase") == "Running")
        conds = _conditions(None, "Pending", f"{running}/{observed.hosts} hosts running")
        problem = (("WorkloadRefused", observed.refused) if observed.refused else None) or (
            pod_problem(observed.pods) or create_failure(observed.events)
        )
        if problem is not None:  # what keeps the slice from starting
            # Degraded carries the reason (and its Event); Running only says why it waits.
            conds[0] = Cond(
                RUNNING, False, "Pending", f"{running}/{observed.hosts} hosts running: {problem[1]}"
            )
    status["phase"] = phase
    degraded = Cond(DEGRADED, False, "AsExpected", "") if problem is None else Cond(DEGRADED, True, *problem)
    conds = [*conds, degraded, _source(observed, phase)]
    status["conditions"] = merge(previous.get("conditions", []), conds, generation, now)
    return Decision(status, restart)


def _source(observed: Observed, phase: str) -> Cond:
    """SourcesReady; a training holds its weights once it reports a step (or has finished)."""
    stepping = bool(observed.progress) and (observed.progress or {}).get("step") is not None

    def loaded(pod: Mapping[str, Any]) -> bool:
        pod_phase = pod.get("status", {}).get("phase")
        return pod_phase == "Succeeded" or (pod_phase == "Running" and stepping)

    if phase == "Succeeded" and not observed.pods:
        return Cond(sources.SOURCES_READY, True, "Loaded", "the training finished")
    return sources.condition(observed.pods, observed.fetches, loaded=loaded)


def _keep(previous: Mapping[str, Any], kind: str) -> Cond:
    for cond in previous.get("conditions", []):
        if cond.get("type") == kind:
            status = {"True": True, "False": False}.get(cond.get("status", ""))
            return Cond(kind, status, str(cond.get("reason", "")), str(cond.get("message", "")))
    return Cond(kind, False, "Unknown", "")


def invalid_status(
    previous: Mapping[str, Any], generation: int, problems: Sequence[str], now: datetime.datetime
) -> dict[str, Any]:
    conds = _conditions(FAILED, "InvalidSpec", "invalid spec: " + "; ".join(problems))
    return {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": merge(previous.get("conditions", []), conds, generation, now),
    }
