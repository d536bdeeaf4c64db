"""GemmaServer status from observations: Ready only when every requested replica serves, Progressing
during a rollout, Degraded with the scheduler's message, a crash loop, a failed pull or OOM, Suspended
at zero; transition times move only on change; Events on transitions; serving figures summed; with
spec.inferencePool, InferencePoolApplied says whether the pool exists or which CRD is missing, an Event
from its first status on, and never touches the phase."""

from __future__ import annotations

import datetime
import json
from typing import Any

from gemma_operator.reconcile.conditions import transitions
from gemma_operator.reconcile.serving import (
    ANNOUNCED,
    WARNINGS,
    Observed,
    PoolState,
    invalid_status,
    server_status,
)

T0 = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def _deployment(
    replicas: int, ready: int, updated: int | None = None, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    updated = replicas if updated is None else updated
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
        },
    }


def _pod(name: str = "p", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def _status(
    observed: Observed,
    previous: dict[str, Any] | None = None,
    suspended: bool = False,
    now: datetime.datetime = T0,
) -> dict[str, Any]:
    return server_status(
        previous=previous or {},
        generation=2,
        suspended=suspended,
        observed=observed,
        selector="gemma.ai/server=s",
        endpoint="http://s.ns.svc:8000/v1",
        accelerator={"summary": "cpu"},
        now=now,
    )


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_when_all_replicas_serve() -> None:
    status = _status(Observed(2, _deployment(2, 2), []))
    assert status["phase"] == "Ready"
    assert _conds(status)["Ready"] == ("True", "Serving")
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (2, 2, 2)


def test_partly_ready_is_progressing_not_ready() -> None:
    status = _status(Observed(2, _deployment(2, 1), []))
    assert status["phase"] == "Progressing"
    assert _conds(status)["Ready"] == ("False", "NotReady")
    assert _conds(status)["Progressing"][0] == "True"


def test_a_stale_deployment_generation_is_not_ready() -> None:
    status = _status(Observed(1, _deployment(1, 1, generation=3, observed=2), []))
    assert status["phase"] == "Progressing"


def test_unschedulable_pod_gives_degraded_with_the_scheduler_message() -> None:
    message = "0/12 nodes are available: 12 node(s) didn't match Pod's node affinity/selector."
    pod = _pod(
        "srv-0",
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ],
    )
    status = _status(Observed(1, _deployment(1, 0), [pod]))
    assert status["phase"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "Unschedulable"
    assert message in degraded["message"]


def test_crash_loop_pull_failure_and_oom() -> None:
    crash = _pod(
        containerStatuses=[
            {
                "name": "runtime",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m"}},
            }
        ]
    )
    pull = _pod(containerStatuses=[{"name": "runtime", "state": {"waiting": {"reason": "ImagePullBackOff"}}}])
    oom = _pod(
        containerStatuses=[
            {
                "name": "runtime",
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "OOMKilled"}},
            }
        ]
    )
    for pod, reason in [(crash, "CrashLoopBackOff"), (pull, "ImagePullBackOff"), (oom, "OOMKilled")]:
        assert _conds(_status(Observed(1, _deployment(1, 0), [pod])))["Degraded"] == ("True", reason)


def test_a_runtime_that_misses_its_accelerator_says_so_in_degraded() -> None:
    # What `gemma-runtime serve --message-file /dev/termination-log` writes when its TPU is not there
    # (tests/runtime/test_devices.py); the kubelet restarts it, so it shows as the last state.
    error = "accelerator: this pod was promised tpu devices but JAX found only cpu; ..."
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "message": json.dumps({"reason": "AcceleratorMissing", "error": error}),
    }
    pod = _pod(
        "srv-0",
        containerStatuses=[
            {
                "name": "runtime",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": terminated},
            }
        ],
    )
    status = _status(Observed(1, _deployment(1, 0), [pod]))
    assert status["phase"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AcceleratorMissing"
    assert degraded["message"] == f"pod srv-0 container runtime: exited with code 1: {error}"
    # A crash's last log lines (not the runtime's JSON) stay a plain crash loop.
    terminated["message"] = "Traceback (most recent call last): ..."
    status = _status(Observed(1, _deployment(1, 0), [pod]))
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"] == "CrashLoopBackOff"


def test_suspended_says_so() -> None:
    status = _status(Observed(0, _deployment(0, 0), []), suspended=True)
    assert status["phase"] == "Suspended"
    assert _conds(status)["Suspended"] == ("True", "Suspended")


def test_transition_time_moves_only_on_change() -> None:
    first = _status(Observed(1, _deployment(1, 0), []))
    same = _status(Observed(1, _deployment(1, 0), []), previous=first, now=T1)
    assert same["conditions"] == first["conditions"]
    ready = _status(Observed(1, _deployment(1, 1), []), previous=first, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times["Ready"] == "2026-11-21T12:05:00Z"
    assert times["Degraded"] == "2026-11-21T12:00:00Z"


def test_events_for_transitions() -> None:
    first = _status(Observed(1, _deployment(1, 0), []))
    assert [e.reason for e in transitions([], first["conditions"], WARNINGS)] == ["RollingOut"]
    ready = _status(Observed(1, _deployment(1, 1), []), previous=first, now=T1)
    events = transitions(first["conditions"], ready["conditions"], WARNINGS)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Serving"), ("Normal", "Complete")]
    pod = _pod(
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no TPU"}
        ]
    )
    broken = _status(Observed(1, _deployment(1, 0), [pod]), previous=ready, now=T1)
    warnings = [(e.type, e.reason) for e in transitions(ready["conditions"], broken["conditions"], WARNINGS)]
    assert ("Warning", "Unschedulable") in warnings
    assert ("Warning", "NotReady") in warnings


def test_serving_figures_are_summed_over_pods() -> None:
    stats = [
        {
            "requests_running": 3,
            "requests_waiting": 1,
            "generated_tokens_per_second": 10.5,
            "time_to_first_token_p50_seconds": 0.2,
        },
        {
            "requests_running": 2,
            "requests_waiting": 0,
            "generated_tokens_per_second": 4.5,
            "time_to_first_token_p50_seconds": 0.4,
        },
    ]
    status = _status(Observed(2, _deployment(2, 2), [], stats))
    assert status["serving"] == {
        "requestsRunning": 5,
        "requestsWaiting": 1,
        "generatedTokensPerSecond": 15.0,
        "timeToFirstTokenP50Seconds": 0.4,
    }


def test_invalid_spec_is_failed_and_names_the_field() -> None:
    status = invalid_status({}, 4, ["spec.accelerator.topology: topology '3x3' is not valid for TPU v5e"], T0)
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.accelerator.topology" in ready["message"]


def test_pods_that_cannot_be_created_give_degraded_with_the_reason() -> None:
    deployment = _deployment(1, 0)
    deployment["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'serviceaccount "gemma-reader" not found',
        }
    ]
    status = _status(Observed(1, deployment, []))
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "FailedCreate")
    assert "gemma-reader" in degraded["message"]


def _pool(*, served: bool, exists: bool) -> PoolState:
    return PoolState(
        name="s",
        api="inference.networking.k8s.io/v1",
        port=8000,
        picker="s-epp:9002",
        served=served,
        exists=exists,
    )


def test_no_pool_condition_without_the_field() -> None:
    assert "InferencePoolApplied" not in _conds(_status(Observed(1, _deployment(1, 1), [])))


def test_a_missing_pool_crd_is_a_false_condition_and_a_warning_but_the_server_serves() -> None:
    status = _status(Observed(1, _deployment(1, 1), [], inference_pool=_pool(served=False, exists=False)))
    assert status["phase"] == "Ready"
    assert _conds(status)["InferencePoolApplied"] == ("False", "CRDNotInstalled")
    (cond,) = [c for c in status["conditions"] if c["type"] == "InferencePoolApplied"]
    assert "inference.networking.k8s.io/v1" in cond["message"]
    # A new resource's False conditions are no news, but this one is: it appears with an opt-in field.
    assert "CRDNotInstalled" not in [e.reason for e in transitions([], status["conditions"], WARNINGS)]
    events = transitions([], status["conditions"], WARNINGS, ANNOUNCED)
    assert [(e.type, e.reason) for e in events if e.reason == "CRDNotInstalled"] == [
        ("Warning", "CRDNotInstalled")
    ]


def test_the_pool_condition_is_true_only_once_the_pool_exists() -> None:
    pending = _status(Observed(1, _deployment(1, 1), [], inference_pool=_pool(served=True, exists=False)))
    assert _conds(pending)["InferencePoolApplied"] == ("False", "Pending")
    applied = _status(
        Observed(1, _deployment(1, 1), [], inference_pool=_pool(served=True, exists=True)), previous=pending
    )
    assert _conds(applied)["InferencePoolApplied"] == ("True", "Applied")
    (cond,) = [c for c in applied["conditions"] if c["type"] == "InferencePoolApplied"]
    assert "InferencePool s" in cond["message"]
    assert "s-epp:9002" in cond["message"]
    events = transitions(pending["conditions"], applied["conditions"], WARNINGS, ANNOUNCED)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Applied")]
