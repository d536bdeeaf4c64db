"""What keeps a workload's pods from running, as (reason, message): the pods' own state (the scheduler's
message, the runtime's refusal to start, a crash loop, an image that cannot be pulled, out of memory)
or, when the pods cannot even be created (a missing ServiceAccount, a quota, an admission webhook's
denial), the controller's FailedCreate Event on the Job."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

BAD_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
}
CREATE_FAILURES = {"FailedCreate"}  # the Job (and ReplicaSet) controllers' reason for a refused pod


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the first thing keeping a pod from running, if any."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status", {})
        for cond in status.get("conditions", []):
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                return "Unschedulable", f"pod {name} cannot be scheduled: {cond.get('message', '')}"
        for container in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            waiting = container.get("state", {}).get("waiting", {})
            where = f"pod {name} container {container.get('name')}"
            refused = runtime_refusal(container)
            if refused is not None:  # before CrashLoopBackOff: the runtime's own reason says more
                return refused[0], f"{where}: {refused[1]}"
            if waiting.get("reason") in BAD_WAITING:
                return str(waiting["reason"]), f"{where}: {waiting.get('message', waiting['reason'])}"
            last = container.get("lastState", {}).get("terminated", {})
            if last.get("reason") == "OOMKilled":
                return (
                    "OOMKilled",
                    f"{where} ran out of memory (OOMKilled): raise spec.pod.resources.limits.memory",
                )
    return None


def runtime_refusal(container: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, error) the runtime wrote as its termination message when it refused to start (e.g.
    AcceleratorMissing: the promised TPU or GPU is not there), now or before the kubelet restarted it."""
    for key in ("state", "lastState"):
        terminated = (container.get(key) or {}).get("terminated") or {}
        if terminated.get("exitCode") in (None, 0):
            continue
        try:
            document = json.loads(str(terminated.get("message") or ""))
        except ValueError:  # a crash's last log lines (FallbackToLogsOnError), not the runtime's word
            continue
        if isinstance(document, dict) and {"reason", "error"} <= document.keys():
            code = terminated["exitCode"]
            return str(document["reason"]), f"exited with code {code}: {document['error']}"
    return None


def _when(event: Mapping[str, Any]) -> str:
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def create_failure(events: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the newest Warning Event saying a workload's pods could not be created."""
    refused = [e for e in events if e.get("type") == "Warning" and e.get("reason") in CREATE_FAILURES]
    if not refused:
        return None
    newest = max(refused, key=_when)
    involved = newest.get("involvedObject", {})
    where = f"{involved.get('kind', 'the workload')} {involved.get('name', '')}".strip()
    return str(newest["reason"]), f"{where} cannot create pods: {newest.get('message', '')}"
