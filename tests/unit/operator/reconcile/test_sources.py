"""SourcesReady from pods: Pending before a pod starts, Downloading while a fetch init container works
(bytes done/total and rate when its /fetch answered), Failed with the fetch's own error (termination
message, now or before a restart), Loading while the runtime reads the weights, Loaded when it holds them;
and how servers (Degraded: SourceFailed) and trainings (a counted restart) react to a failed fetch."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from gemma_operator.reconcile import serving, sources, training
from gemma_operator.reconcile.conditions import Cond

NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)
URI = "hf://google/gemma-2-9b-it"
FAILED = {"state": "failed", "error": f"{URI}@main: the file list: the Hub answered 403 Forbidden: gated"}


def _pod(
    name: str = "p",
    fetch: dict[str, Any] | None = None,
    *,
    phase: str = "Pending",
    ready: bool = False,
    fetches: bool = True,
    last: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod whose fetch-checkpoint init container is in state ``fetch`` (None: no status yet)."""
    spec = {"initContainers": [{"name": "fetch-checkpoint", "args": ["fetch", URI, "--to", "/c"]}]}
    status: dict[str, Any] = {"phase": phase, "podIP": "10.0.0.7"}
    if fetch is not None or last is not None:
        status["initContainerStatuses"] = [
            {"name": "fetch-checkpoint", "state": fetch or {}, **({"lastState": last} if last else {})}
        ]
    status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": {"name": name}, "spec": spec if fetches else {}, "status": status}


RUNNING: dict[str, Any] = {"running": {"startedAt": "2026-11-21T11:59:00Z"}}
DONE: dict[str, Any] = {"terminated": {"exitCode": 0, "reason": "Completed", "message": '{"state": "done"}'}}


def _failed(message: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}


def _cond(*pods: dict[str, Any], progress: dict[str, Any] | None = None) -> Cond:
    return sources.condition(list(pods), progress or {}, loaded=serving.pod_ready)


def test_pending_until_a_pod_starts() -> None:
    unscheduled = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}
    assert _cond() == Cond("SourcesReady", False, "Pending", "no pod has started yet")
    assert _cond(unscheduled).reason == "Pending"


def test_downloading_with_bytes_and_rate() -> None:
    progress = {"uri": URI, "state": "downloading", "bytes_done": 1_200_000_000}
    progress |= {"bytes_total": 18_400_000_000, "bytes_per_second": 40e6}
    cond = _cond(_pod("p-1", RUNNING), progress={"p-1": progress})
    assert (cond.status, cond.reason) == (False, "Downloading")
    assert cond.message == f"{URI}: 1.20 GB / 18.40 GB (7%) at 40.00 MB/s on pod p-1"


def test_downloading_without_an_answer_names_the_uri() -> None:
    waiting = {"waiting": {"reason": "PodInitializing"}}
    assert _cond(_pod("p-1", waiting)).message == f"{URI} on pod p-1"
    assert _cond(_pod("p-1", None)).reason == "Downloading", "no status yet, but the pod has an IP"
    stale = {"uri": "hf://other/model", "bytes_done": 5, "bytes_total": 10}
    assert _cond(_pod("p-1", RUNNING), progress={"p-1": stale}).message == f"{URI} on pod p-1"


@pytest.mark.parametrize(
    ("fetch", "last", "expected"),
    [
        (_failed(json.dumps(FAILED)), None, FAILED["error"]),
        ({"waiting": {"reason": "CrashLoopBackOff"}}, _failed(json.dumps(FAILED)), FAILED["error"]),
        (_failed("error: disk full\n"), None, "error: disk full"),  # FallbackToLogsOnError: the log tail
    ],
)
def test_failed_with_the_fetch_error(
    fetch: dict[str, Any], last: dict[str, Any] | None, expected: str
) -> None:
    cond = _cond(_pod("p-1", RUNNING, ready=True), _pod("p-2", fetch, last=last))
    assert (cond.status, cond.reason) == (False, "Failed")
    assert cond.message == f"pod p-2: fetch-checkpoint ({URI}) failed with exit code 1: {expected}"


def test_loading_then_loaded() -> None:
    loading = _cond(_pod("p-1", DONE, phase="Running"), _pod("p-2", DONE, phase="Running", ready=True))
    assert (loading.status, loading.reason) == (False, "Loading")
    assert loading.message == f"{URI} downloaded; the runtime is loading the weights (1/2 pods done)"
    loaded = _cond(_pod("p-1", DONE, phase="Running", ready=True))
    assert loaded == Cond("SourcesReady", True, "Loaded", f"{URI} downloaded; weights loaded on 1/1 pods")


def test_mounted_sources_need_no_download() -> None:
    cond = _cond(_pod(phase="Running", ready=True, fetches=False))
    assert cond == Cond("SourcesReady", True, "Loaded", "weights loaded on 1/1 pods")


def test_pods_being_deleted_do_not_count() -> None:
    gone = _pod("old", _failed("boom"))
    gone["metadata"]["deletionTimestamp"] = "2026-11-21T12:00:00Z"
    assert _cond(gone, _pod("new", DONE, phase="Running", ready=True)).reason == "Loaded"


def test_fetching_is_what_the_operator_polls() -> None:
    assert sources.fetching(_pod(fetch=RUNNING))
    assert sources.fetching(_pod(fetch=None))
    assert not sources.fetching(_pod(fetch=DONE))
    assert not sources.fetching(_pod(fetches=False))


def _server_status(*pods: dict[str, Any]) -> dict[str, Any]:
    deployment = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1}}
    return serving.server_status(
        previous={},
        generation=1,
        suspended=False,
        observed=serving.Observed(1, deployment, list(pods)),
        selector="s",
        endpoint="e",
        accelerator={},
        now=NOW,
    )


def test_a_failed_fetch_degrades_the_server_with_its_error() -> None:
    crash = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting"}}
    status = _server_status(_pod("p-1", crash, last=_failed(json.dumps(FAILED))))
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Degraded"
    assert conds["Degraded"]["reason"] == "SourceFailed"
    assert FAILED["error"] in conds["Degraded"]["message"]
    assert conds["SourcesReady"]["reason"] == "Failed"


def test_a_downloading_server_is_not_ready() -> None:
    status = _server_status(_pod("p-1", RUNNING))
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds["SourcesReady"] == ("False", "Downloading")
    assert conds["Ready"] == ("False", "NotReady")
    assert conds["Degraded"] == ("False", "AsExpected")


def test_a_failed_fetch_is_a_counted_training_restart() -> None:
    why = training.failure([_pod("t-0", _failed(json.dumps(FAILED)), phase="Failed")])
    assert why.counted
    assert why.reason.startswith(f"SourceFailed (pod t-0: fetch-checkpoint ({URI}) failed with exit code 1")


def _training(observed: training.Observed, previous: dict[str, Any] | None = None) -> dict[str, str]:
    status = training.decide(
        previous=previous or {},
        generation=1,
        suspended=False,
        max_restarts=2,
        observed=observed,
        now=NOW,
        accelerator={},
    ).status
    return {c["type"]: c["reason"] for c in status["conditions"]}


def test_training_holds_its_weights_once_it_reports_steps() -> None:
    job: dict[str, Any] = {"status": {}}
    pod = _pod("t-0", DONE, phase="Running")
    assert _training(training.Observed(1, job, [pod]))["SourcesReady"] == "Loading"
    assert _training(training.Observed(1, job, [pod], {"step": 3}))["SourcesReady"] == "Loaded"
    fetching = training.Observed(
        1, job, [_pod("t-0", RUNNING)], fetches={"t-0": {"uri": URI, "bytes_done": 1}}
    )
    assert _training(fetching)["SourcesReady"] == "Downloading"
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert _training(training.Observed(1, complete, []))["SourcesReady"] == "Loaded"
