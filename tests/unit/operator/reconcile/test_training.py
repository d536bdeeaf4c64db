"""GemmaTraining decisions: Pending until every host runs, Running with progress, Succeeded with a
completion time, and after a failed slice a restart that counts only application errors (a disruption
or exit code 42 named by the Job's pod failure policy does not) until maxRestarts gives Failed for good;
Suspended; blocked when the workload cannot exist; a bounded restart history; the final figures from pod
0's termination message; Degraded while pods cannot be created or scheduled."""

from __future__ import annotations

import datetime
import json
from typing import Any

from gemma_operator.reconcile.conditions import EventSpec, transitions
from gemma_operator.reconcile.training import WARNINGS, Observed, decide, failure, final_progress

NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)


def _pod(index: int, phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{index}"}, "status": {"phase": phase, **status}}


def _job(condition: str | None = None, reason: str = "", message: str = "") -> dict[str, Any]:
    conds = [{"type": condition, "status": "True", "reason": reason, "message": message}] if condition else []
    return {"status": {"conditions": conds}}


def _decide(observed: Observed, previous: dict[str, Any] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {"suspended": False, "max_restarts": 2, "blocked": None} | kw
    return decide(
        previous=previous or {},
        generation=1,
        observed=observed,
        now=NOW,
        accelerator={"summary": "cpu"},
        **args,
    )


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_pending_until_every_host_runs_then_running_with_progress() -> None:
    pending = _decide(Observed(4, _job(), [_pod(0), _pod(1, "Pending")])).status
    assert pending["phase"] == "Pending"
    progress = {
        "step": 20,
        "total_steps": 100,
        "loss": 2.5,
        "tokens_per_second": 900.0,
        "mfu": 0.4,
        "eta_seconds": 80.7,
        "last_checkpoint": {"step": 10, "uri": "gs://b/x"},
    }
    running = _decide(Observed(2, _job(), [_pod(0), _pod(1)], progress), previous=pending).status
    assert running["phase"] == "Running"
    assert running["startTime"] == "2026-11-21T12:00:00Z"
    assert running["progress"] == {
        "step": 20,
        "totalSteps": 100,
        "loss": 2.5,
        "tokensPerSecond": 900.0,
        "mfu": 0.4,
        "etaSeconds": 80,
    }
    assert running["lastCheckpoint"] == {"step": 10, "uri": "gs://b/x"}


def test_succeeded_keeps_its_completion_time() -> None:
    done = _decide(
        Observed(
            1,
            {
                "status": {
                    "conditions": [{"type": "Complete", "status": "True"}],
                    "completionTime": "2026-11-21T11:59:00Z",
                }
            },
            [],
        )
    ).status
    assert (done["phase"], done["completionTime"]) == ("Succeeded", "2026-11-21T11:59:00Z")
    later = _decide(Observed(1, None, []), previous=done).status  # the Job was deleted by its TTL
    assert later["phase"] == "Succeeded"


def test_an_application_error_restarts_and_counts() -> None:
    pod = _pod(1, "Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}])
    decision = _decide(Observed(2, _job("Failed", "BackoffLimitExceeded"), [_pod(0), pod]))
    assert decision.restart is not None
    assert decision.restart.counted
    assert (decision.status["attempt"], decision.status["restarts"]) == (1, 1)
    assert "exit code 1" in decision.status["restartHistory"][0]["reason"]


def test_a_pod_whose_accelerator_is_missing_restarts_with_the_runtimes_reason() -> None:
    error = "accelerator: this pod was promised tpu devices but JAX could not start them: ..."
    message = json.dumps({"reason": "AcceleratorMissing", "error": error})
    terminated = {"exitCode": 1, "reason": "Error", "message": message}
    pod = _pod(1, "Failed", containerStatuses=[{"name": "runtime", "state": {"terminated": terminated}}])
    decision = _decide(Observed(2, _job("Failed", "BackoffLimitExceeded"), [_pod(0), pod]))
    assert decision.restart is not None
    assert decision.restart.counted
    reason = decision.status["restartHistory"][0]["reason"]
    assert reason.startswith(f"AcceleratorMissing (exited with code 1: {error}) on pod ")


def test_disruptions_and_retry_requests_do_not_count() -> None:
    disruption = _job(
        "Failed",
        "PodFailurePolicy",
        "Pod ns/p-1 has condition DisruptionTarget matching FailJob rule at index 0",
    )
    decision = _decide(Observed(2, disruption, []), previous={"attempt": 1, "restarts": 1})
    assert decision.restart is not None
    assert not decision.restart.counted
    assert (decision.status["attempt"], decision.status["restarts"]) == (2, 1)
    retry = _job(
        "Failed",
        "PodFailurePolicy",
        "Container runtime for pod ns/p-0 failed with exit code 42 matching FailJob rule at index 1",
    )
    assert not failure([], retry).counted


def test_max_restarts_gives_failed_for_good() -> None:
    pod = _pod(0, "Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 3}}}])
    decision = _decide(Observed(1, _job("Failed"), [pod]), previous={"attempt": 2, "restarts": 2})
    assert decision.restart is None
    assert decision.status["phase"] == "Failed"
    assert _conds(decision.status)["Failed"] == ("True", "MaxRestartsExceeded")
    again = _decide(Observed(1, _job("Failed"), [pod]), previous=decision.status)
    assert again.restart is None
    assert again.status["phase"] == "Failed"


def test_suspended_and_blocked() -> None:
    assert _decide(Observed(1, _job(), []), suspended=True).status["phase"] == "Suspended"
    blocked = _decide(Observed(4, None, []), blocked="the JobSet API is not installed").status
    assert blocked["phase"] == "Failed"
    assert _conds(blocked)["Failed"] == ("True", "Blocked")


def test_restart_history_is_bounded() -> None:
    history = [{"time": "t", "reason": "r", "counted": False}] * 20
    disruption = _job("Failed", "PodFailurePolicy", "matching FailJob rule at index 0")
    status = _decide(Observed(1, disruption, []), previous={"attempt": 20, "restartHistory": history}).status
    assert len(status["restartHistory"]) == 20
    assert status["restartHistory"][-1]["reason"].startswith("DisruptionTarget")


def _finished_pod(message: str, container: str = "runtime") -> dict[str, Any]:
    terminated = {"exitCode": 0, "reason": "Completed", "message": message}
    return _pod(0, "Succeeded", containerStatuses=[{"name": container, "state": {"terminated": terminated}}])


def test_the_final_figures_come_from_pod_0s_termination_message_after_it_exits() -> None:
    document = {
        "name": "t",
        "total_steps": 200,
        "step": 200,
        "loss": 1.25,
        "eta_seconds": 0,
        "state": "Finished",
        "last_checkpoint": {"step": 200, "uri": "gs://b/ck/200", "time": "2026-11-21T11:59:58Z"},
    }
    final = final_progress(_finished_pod(json.dumps(document)))
    assert final == document
    live = {"step": 170, "total_steps": 200, "loss": 1.5, "eta_seconds": 7.2}
    running = _decide(Observed(1, _job(), [_pod(0)], live)).status
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    done = _decide(
        Observed(1, complete, [_finished_pod(json.dumps(document))], final), previous=running
    ).status
    assert done["phase"] == "Succeeded"
    assert done["progress"] == {"step": 200, "totalSteps": 200, "loss": 1.25, "etaSeconds": 0}
    assert done["lastCheckpoint"] == document["last_checkpoint"]
    # A crash leaves its last log lines (FallbackToLogsOnError), and other containers say nothing.
    assert final_progress(_finished_pod("Traceback (most recent call last): ...")) is None
    assert final_progress(_finished_pod(json.dumps(document), container="fetch-model")) is None
    assert final_progress(_finished_pod(json.dumps({"state": "done"}))) is None
    assert final_progress(_pod(0)) is None


def _event(reason: str, message: str, when: str, kind: str = "Warning") -> dict[str, Any]:
    return {
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": when,
        "involvedObject": {"kind": "Job", "name": "t-a0"},
    }


def test_pods_that_cannot_be_created_make_a_pending_training_degraded_with_the_controllers_words() -> None:
    events = [
        _event("FailedCreate", 'pods "t-a0-0" is forbidden: exceeded quota: tpu', "2026-11-21T11:58:00Z"),
        _event("FailedCreate", 'serviceaccount "gemma-trainer" not found', "2026-11-21T11:59:00Z"),
        _event("SuccessfulCreate", "created pod", "2026-11-21T11:59:30Z", kind="Normal"),
    ]
    status = _decide(Observed(4, _job(), [], events=events)).status
    assert status["phase"] == "Pending"
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "FailedCreate")
    message = 'Job t-a0 cannot create pods: serviceaccount "gemma-trainer" not found'
    assert conds["Degraded"]["message"] == message
    assert conds["Running"]["message"] == f"0/4 hosts running: {message}"
    assert transitions([], status["conditions"], WARNINGS) == [EventSpec("Warning", "FailedCreate", message)]
    # Once the pods run, the old Events are history: no longer degraded, and said so.
    running = _decide(Observed(1, _job(), [_pod(0)], events=events), previous=status).status
    assert _conds(running)["Degraded"] == ("False", "AsExpected")
    assert EventSpec("Normal", "AsExpected", "Degraded is False") in transitions(
        status["conditions"], running["conditions"], WARNINGS
    )


def test_an_unschedulable_pod_says_what_the_scheduler_said() -> None:
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient google.com/tpu.",
    }
    pods = [_pod(0, "Pending", conditions=[unschedulable])]
    status = _decide(
        Observed(1, _job(), pods, events=[_event("FailedCreate", "old", "2026-11-21T11:00:00Z")])
    )
    conds = {c["type"]: c for c in status.status["conditions"]}
    assert conds["Degraded"]["reason"] == "Unschedulable"  # the pod's state before an older Event
    assert "3 Insufficient google.com/tpu" in conds["Degraded"]["message"]


def test_a_workload_the_api_server_refused_is_said_before_anything_else() -> None:
    refused = 'the API server refused to create Job t-a0: jobs.batch "t-a0" is forbidden: exceeded quota'
    status = _decide(
        Observed(4, None, [], events=[_event("FailedCreate", "old", "x")], refused=refused)
    ).status
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Pending"
    assert (conds["Degraded"]["reason"], conds["Degraded"]["message"]) == ("WorkloadRefused", refused)
    assert conds["Running"]["message"] == f"0/4 hosts running: {refused}"
