"""Events from condition transitions: status changes always; reason changes only while the condition is
True or in its bad state."""

from __future__ import annotations

from typing import Any

from gemma_operator.reconcile.conditions import EventSpec, transitions

TRAINING = {"Failed": True, "Degraded": True}
SERVING = {"Ready": False, "Degraded": True}


def cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_a_restart_says_running_stopped_and_not_that_failed_and_succeeded_are_still_false() -> None:
    running = [
        cond("Running", "True", "Running"),
        cond("Succeeded", "False", "Running"),
        cond("Failed", "False", "Running"),
    ]
    pending = [
        cond("Running", "False", "Pending", "0/2 hosts running"),
        cond("Succeeded", "False", "Pending"),
        cond("Failed", "False", "Pending"),
    ]
    assert transitions(running, pending, TRAINING) == [EventSpec("Normal", "Pending", "0/2 hosts running")]


def test_a_new_reason_of_a_true_condition_or_of_a_bad_state_is_news() -> None:
    loading = [cond("Ready", "False", "Downloading"), cond("Degraded", "True", "FailedCreate", "quota")]
    later = [
        cond("Ready", "False", "Loading", "weights 3/8"),
        cond("Degraded", "True", "CrashLoop", "exit 1"),
    ]
    assert transitions(loading, later, SERVING) == [
        EventSpec("Warning", "Loading", "weights 3/8"),
        EventSpec("Warning", "CrashLoop", "exit 1"),
    ]
    serving = [cond("Progressing", "True", "RollingOut")]
    assert transitions(serving, [cond("Progressing", "True", "Scaling")], SERVING) == [
        EventSpec("Normal", "Scaling", "Progressing is True")
    ]


def test_a_new_reason_of_a_condition_in_its_good_false_state_is_not_an_event() -> None:
    calm = [cond("Degraded", "False", "AsExpected")]
    assert transitions(calm, [cond("Degraded", "False", "Recovered")], SERVING) == []
    assert transitions(calm, [cond("Degraded", "True", "CrashLoop", "exit 1")], SERVING) == [
        EventSpec("Warning", "CrashLoop", "exit 1")
    ]
