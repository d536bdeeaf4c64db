"""The operator reconciling GemmaTrainings on the real control plane: one pod per TPU host with distinct
process ids and one coordinator; completion; restarts of the whole slice, counted for application
errors and not for disruptions, until maxRestarts; progress of the real runtime on pod 0 in `kubectl get`;
suspend and resume; deletion; the operator killed mid-run; multislice without the JobSet API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemma_runtime.config import TrainConfig
from gemma_runtime.train.command import sample_data
from tests.api_cases import merge, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.nodes import V5E_2X4, V5E_2X4_MULTI, V5E_4X4
from tests.cluster.harness.operator import OperatorProcess
from tests.cluster.harness.runtime import RuntimeProcess, end_pod
from tests.cluster.harness.wait import wait_for

FINETUNE = merge(sample("training-gemma-2b-v5e"), {"spec": {"pod": {"serviceAccountName": None}}})
FINETUNE["spec"]["pod"] = {}
INDEX = "batch.kubernetes.io/job-completion-index"
SUCCEED_NOW = "kwok.gemma.ai/succeed-after=0s"


def _apply(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(doc))


def _training(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        cluster.kubectl("-n", namespace, "get", "gemmatraining", name, "-o", "json")
    )
    return obj


def _status(
    cluster: LocalCluster, namespace: str, name: str, check: Any, what: str, *, timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = _training(cluster, namespace, name).get("status", {})
        return status if check(status) else None

    try:
        return wait_for(probe, timeout, what)
    except TimeoutError:
        raise AssertionError(
            f"{what}; status: {json.dumps(_training(cluster, namespace, name).get('status'))}"
        ) from None


def _pods(
    cluster: LocalCluster, namespace: str, name: str, attempt: int | None = None
) -> list[dict[str, Any]]:
    selector = f"gemma.ai/training={name}" + (f",gemma.ai/attempt={attempt}" if attempt is not None else "")
    items = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _running(
    cluster: LocalCluster, namespace: str, name: str, attempt: int, hosts: int
) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        pods = [p for p in _pods(cluster, namespace, name, attempt) if p["status"].get("phase") == "Running"]
        return pods if len(pods) == hosts else None

    return wait_for(probe, 60, f"{hosts} running pods of attempt {attempt}")


def _fail(cluster: LocalCluster, namespace: str, pod: str, code: int, *, disruption: bool = False) -> None:
    """Fail a running pod with ``code``; a disruption first marks it as preemption does. (A
    DisruptionTarget without a fresh transition time is reset by the disruption controller as stale.)"""
    if disruption:
        condition = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": "preempted",
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        cluster.kubectl(
            "-n",
            namespace,
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=strategic",
            "-p",
            json.dumps({"status": {"conditions": [condition]}}),
        )
    cluster.kubectl("-n", namespace, "annotate", "pod", pod, f"kwok.gemma.ai/fail-exit-code={code}")


def test_a_v5e_4x4_slice_gets_one_pod_per_host_and_succeeds(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    doc = merge(FINETUNE, {"spec": {"pod": {"annotations": {"kwok.gemma.ai/succeed-after": "4s"}}}})
    _apply(crds, namespace, doc)
    pods = _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(V5E_4X4.node_names())
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2", "3"]
    envs = [{e["name"]: e for e in p["spec"]["containers"][0]["env"]} for p in pods]
    assert {e["JAX_COORDINATOR_ADDRESS"]["value"] for e in envs} == {
        f"gemma-2b-finetune-a0-0.gemma-2b-finetune.{namespace}.svc:8476"
    }
    assert {e["JAX_PROCESS_COUNT"]["value"] for e in envs} == {"4"}
    assert all(
        e["JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("job-completion-index']")
        for e in envs
    )
    assert {p["spec"]["hostname"] for p in pods} == {f"gemma-2b-finetune-a0-{i}" for i in range(4)}
    status = _status(
        crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Succeeded", "Succeeded"
    )
    assert status["completionTime"]
    assert status["startTime"]
    assert status["accelerator"]["hosts"] == 4


def test_a_v5e_2x4_slice_is_one_pod(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    doc = merge(FINETUNE, {"spec": {"accelerator": {"topology": "2x4"}}})
    _apply(crds, namespace, doc)
    (pod,) = _running(crds, namespace, "gemma-2b-finetune", 0, 1)
    assert pod["spec"]["nodeName"] in V5E_2X4.node_names()
    assert pod["spec"]["containers"][0]["resources"]["limits"]["google.com/tpu"] == "8"
    _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Running", "Running")


def test_a_two_host_v5e_2x4_slice_lands_only_on_4_chip_machines(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    # Both 2x4 pools carry the same accelerator and topology labels and an 8-chip node has room for a
    # 4-chip pod: only the instance type keeps the slice off the 8-chip machines.
    doc = merge(FINETUNE, {"spec": {"accelerator": {"topology": "2x4", "chipsPerHost": 4}}})
    _apply(crds, namespace, doc)
    pods = _running(crds, namespace, "gemma-2b-finetune", 0, 2)
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(V5E_2X4_MULTI.node_names())
    assert {p["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] for p in pods} == {
        "ct5lp-hightpu-4t"
    }
    _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Running", "Running")


def test_failures_restart_the_slice_counting_only_application_errors(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    _apply(crds, namespace, merge(FINETUNE, {"spec": {"failurePolicy": {"maxRestarts": 1}}}))
    pods = _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    _fail(crds, namespace, pods[1]["metadata"]["name"], 1)
    status = _status(
        crds, namespace, "gemma-2b-finetune", lambda s: s.get("attempt") == 1, "the first restart"
    )
    assert status["restarts"] == 1
    assert status["restartHistory"][0]["counted"] is True
    assert "exit code 1" in status["restartHistory"][0]["reason"]
    pods = _running(crds, namespace, "gemma-2b-finetune", 1, 4)
    jobs = crds.kubectl("-n", namespace, "get", "jobs", "-o", "name").split()
    wait_for(
        lambda: (
            crds.kubectl("-n", namespace, "get", "jobs", "-o", "name").split()
            == ["job.batch/gemma-2b-finetune-a1"]
        ),
        30,
        "the failed attempt's Job to go",
    )

    _fail(crds, namespace, pods[2]["metadata"]["name"], 143, disruption=True)
    status = _status(
        crds, namespace, "gemma-2b-finetune", lambda s: s.get("attempt") == 2, "the disruption restart"
    )
    assert status["restarts"] == 1  # a disruption does not count
    assert status["restartHistory"][1]["counted"] is False
    assert "DisruptionTarget" in status["restartHistory"][1]["reason"]

    pods = _running(crds, namespace, "gemma-2b-finetune", 2, 4)
    _fail(crds, namespace, pods[0]["metadata"]["name"], 3)
    status = _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Failed", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MaxRestartsExceeded"
    assert "exit code 3" in failed["message"]
    events = crds.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "reason=SliceRestarted", "-o", "json"
    )
    assert len(json.loads(events)["items"]) == 2
    assert jobs  # every attempt had its Job


@pytest.fixture
def runtime_process() -> Iterator[dict[str, Any]]:
    """The real `gemma-runtime train` standing in for pod 0's container; stopped by the test."""
    state: dict[str, Any] = {"proc": None}
    yield state
    proc = state["proc"]
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _runtime_config(
    cluster: LocalCluster, namespace: str, name: str, pod_ip: str, output: Path
) -> dict[str, Any]:
    """The TrainConfig the operator rendered, with what a laptop can run in place of gemma-2b on TPU:
    the tiny preset, the shipped sample text and a local checkpoint folder, served on pod 0's IP."""
    items = json.loads(
        cluster.kubectl("-n", namespace, "get", "configmaps", "-l", f"gemma.ai/training={name}", "-o", "json")
    )["items"]
    (config_map,) = items
    rendered = TrainConfig.model_validate(yaml.safe_load(config_map["data"]["runtime.yaml"]))
    assert rendered.name == name
    assert rendered.port == 8000
    local = {
        "model": {"variant": "tiny"},
        "data": {"path": str(sample_data()), "format": "text"},
        "training": {**rendered.training.model_dump(), "steps": 100_000, "global_batch_size": 8,
                     "sequence_length": 64, "precision": "f32", "remat": "none", "lora": None},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "checkpoints": {"directory": str(output), "interval_steps": 20, "keep": 2, "resume": "latest"},
        "host": pod_ip,
    }  # fmt: skip
    return {**rendered.model_dump(mode="json"), **local}


def test_progress_from_the_real_runtime_on_pod_0_shows_in_kubectl_get(
    crds: LocalCluster,
    running_operator: OperatorProcess,
    namespace: str,
    runtime_process: dict[str, Any],
    tmp_path: Path,
) -> None:
    _apply(crds, namespace, FINETUNE)
    pods = _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    (pod0,) = [
        p for p in pods if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0"
    ]
    config = _runtime_config(crds, namespace, "gemma-2b-finetune", pod0["status"]["podIP"], tmp_path / "ck")
    (tmp_path / "runtime.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    runtime_process["proc"] = subprocess.Popen(
        [sys.executable, "-m", "gemma_runtime", "train", "--no-progress", "--log-every", "5",
         "--config", str(tmp_path / "runtime.yaml")],
        env={**env, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    status = _status(
        crds,
        namespace,
        "gemma-2b-finetune",
        lambda s: s.get("progress", {}).get("step", 0) >= 20 and s.get("lastCheckpoint"),
        "progress past step 20 with a checkpoint",
        timeout=180,
    )
    progress = status["progress"]
    assert progress["totalSteps"] == 100_000
    assert 0 < progress["loss"] < 8
    assert progress["tokensPerSecond"] > 0
    assert 0 < progress["mfu"] < 1
    assert progress["etaSeconds"] > 0
    checkpoint = status["lastCheckpoint"]
    assert checkpoint["uri"] == f"{tmp_path / 'ck'}/{checkpoint['step']}"
    assert (tmp_path / "ck" / str(checkpoint["step"])).is_dir()
    row = crds.kubectl("-n", namespace, "get", "gemmatrainings").splitlines()[1].split()
    assert row[-4] == "Running"  # PHASE, STEP, LOSS, then AGE
    assert int(row[-3]) >= 20
    assert 0 < float(row[-2]) < 8


def test_a_finished_training_shows_its_final_figures_though_the_operator_missed_its_end(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    _apply(crds, namespace, FINETUNE)
    pods = _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    (pod0,) = [p for p in pods if p["metadata"]["annotations"][INDEX] == "0"]
    config = _runtime_config(crds, namespace, "gemma-2b-finetune", pod0["status"]["podIP"], tmp_path / "ck")
    config["training"]["steps"] = 30
    # The whole run happens while the operator is away: only the ended pod can tell how it finished.
    running_operator.stop()
    runtime = RuntimeProcess("train", config, tmp_path)
    try:
        code = end_pod(crds, namespace, pod0["metadata"]["name"], runtime, timeout=300)
    finally:
        runtime.stop()
    assert code == 0, runtime.tail()
    for pod in pods:
        if pod is not pod0:
            crds.kubectl("-n", namespace, "annotate", "pod", pod["metadata"]["name"], SUCCEED_NOW)
    running_operator.start()
    status = _status(
        crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Succeeded", "Succeeded"
    )
    progress = status["progress"]
    assert (progress["step"], progress["totalSteps"], progress["etaSeconds"]) == (30, 30, 0)
    assert 0 < progress["loss"] < 8
    assert status["lastCheckpoint"]["step"] == 30
    assert status["lastCheckpoint"]["uri"] == f"{tmp_path / 'ck'}/30"
    assert (tmp_path / "ck" / "30").is_dir()
    row = crds.kubectl("-n", namespace, "get", "gemmatrainings").splitlines()[1].split()
    assert (row[-4], row[-3]) == ("Succeeded", "30")  # PHASE, STEP, LOSS, then AGE


def test_pods_that_cannot_be_created_leave_the_training_degraded_with_the_controllers_reason(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    # The sample's ServiceAccount, which this namespace does not have (yet).
    _apply(crds, namespace, merge(FINETUNE, {"spec": {"pod": {"serviceAccountName": "gemma-trainer"}}}))

    def degraded(status: dict[str, Any]) -> dict[str, Any] | None:
        return next((c for c in status.get("conditions", []) if c["type"] == "Degraded"), None)

    status = _status(
        crds,
        namespace,
        "gemma-2b-finetune",
        lambda s: (degraded(s) or {}).get("status") == "True",
        "Degraded",
    )
    condition = degraded(status)
    assert condition is not None
    assert status["phase"] == "Pending"
    assert condition["reason"] == "FailedCreate"
    assert 'serviceaccount "gemma-trainer" not found' in condition["message"]
    assert condition["message"].startswith("Job gemma-2b-finetune-a0 cannot create pods: ")
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["message"] == f"0/4 hosts running: {condition['message']}"
    selector = "involvedObject.kind=GemmaTraining,reason=FailedCreate"
    events = json.loads(
        crds.kubectl("-n", namespace, "get", "events", "--field-selector", selector, "-o", "json")
    )["items"]
    assert [e["type"] for e in events] == ["Warning"]
    assert 'serviceaccount "gemma-trainer" not found' in events[0]["message"]
    # Fixed by the user: the Job controller retries, the pods run, and Degraded clears.
    crds.kubectl("-n", namespace, "create", "serviceaccount", "gemma-trainer")
    _status(
        crds,
        namespace,
        "gemma-2b-finetune",
        lambda s: s.get("phase") == "Running" and (degraded(s) or {}).get("status") == "False",
        "Running and no longer Degraded",
        timeout=180,
    )


CANNOT_START = {
    "quota": ("FailedCreate", "exceeded quota"),
    "no-pool": ("Unschedulable", "nodes are available"),
    "no-jobs": ("WorkloadRefused", "exceeded quota"),
}


@pytest.mark.parametrize("case", sorted(CANNOT_START))
def test_a_quota_a_refused_job_or_a_missing_pool_is_said_in_the_clusters_words(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, case: str
) -> None:
    reason, words = CANNOT_START[case]
    doc = FINETUNE
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}}
    if case == "quota":  # two of the slice's four pods fit the namespace's quota
        _apply(crds, namespace, {**quota, "spec": {"hard": {"pods": "2"}}})
    elif case == "no-jobs":  # the API server refuses the Job itself
        _apply(crds, namespace, {**quota, "spec": {"hard": {"count/jobs.batch": "0"}}})
    else:  # a v6e 4x4 slice, for which the cluster has no node pool
        doc = merge(FINETUNE, {"spec": {"accelerator": {"type": "v6e", "topology": "4x4"}}})
    _apply(crds, namespace, doc)

    def degraded(status: dict[str, Any]) -> bool:  # pods of an earlier test may hold the pool a moment
        return any(
            (c["type"], c["status"], c["reason"]) == ("Degraded", "True", reason)
            for c in status.get("conditions", [])
        )

    status = _status(crds, namespace, "gemma-2b-finetune", degraded, f"Degraded: {reason}", timeout=120)
    condition = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert status["phase"] == "Pending"
    assert words in condition["message"], condition["message"]
    selector = f"involvedObject.kind=GemmaTraining,reason={reason}"
    events = json.loads(
        crds.kubectl("-n", namespace, "get", "events", "--field-selector", selector, "-o", "json")
    )["items"]
    assert [e["type"] for e in events] == ["Warning"]
    if case == "no-jobs":  # lifted: the next reconcile creates the Job and the slice runs
        crds.kubectl("-n", namespace, "delete", "resourcequota", "q")
        _running(crds, namespace, "gemma-2b-finetune", 0, 4)
        _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Running", "Running")


def test_suspend_resume_delete_and_operator_restart_converge(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    _apply(crds, namespace, FINETUNE)
    _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    _apply(crds, namespace, merge(FINETUNE, {"spec": {"suspend": True}}))
    _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Suspended", "Suspended")
    wait_for(lambda: not _pods(crds, namespace, "gemma-2b-finetune"), 30, "pods to stop")
    running_operator.kill()
    _apply(crds, namespace, merge(FINETUNE, {"spec": {"suspend": False}}))
    running_operator.start()
    _running(crds, namespace, "gemma-2b-finetune", 0, 4)
    _status(crds, namespace, "gemma-2b-finetune", lambda s: s.get("phase") == "Running", "Running again")
    assert crds.kubectl("-n", namespace, "get", "jobs", "-o", "name").split() == [
        "job.batch/gemma-2b-finetune-a0"
    ]
    crds.kubectl("-n", namespace, "delete", "gemmatraining", "gemma-2b-finetune")
    wait_for(
        lambda: (
            not crds.kubectl(
                "-n",
                namespace,
                "get",
                "jobs,services,configmaps",
                "-l",
                "gemma.ai/training=gemma-2b-finetune",
                "-o",
                "name",
            ).strip()
        ),
        60,
        "the children to be garbage-collected",
    )


def test_multislice_without_jobset_says_so_and_creates_nothing(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    _apply(crds, namespace, sample("training-multislice-v5p"))
    status = _status(crds, namespace, "gemma2-9b-multislice", lambda s: s.get("phase") == "Failed", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "Blocked"
    assert "JobSet API (jobset.x-k8s.io/v1alpha2) is not installed" in failed["message"]
    assert not crds.kubectl("-n", namespace, "get", "jobs", "-o", "name").strip()
