"""GemmaTraining decisions: Pending until every host runs, Running with progress, Succeeded with a
completion time, and after a failed slice a restart that counts only application errors (a disruption
or exit code 42 named by the Job's pod failure policy does not) until maxRestarts gives Failed for good;
Suspended; blocked when the workload cannot exist; a bounded restart history."""

from __future__ import annotations

import datetime
from typing import Any

from gemma_operator.reconcile.training import Observed, decide, failure

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
