"""A tiny GemmaTraining on two CPU hosts as real pods: two pods of an Indexed Job find each other through
the headless Service's DNS name and train together with jax.distributed, checkpointing to a claim. One
pod is deleted mid-run, as a preemption would: the operator restarts the slice without counting a
failure, and the run resumes from its last committed checkpoint and reaches Succeeded at the last step."""

from __future__ import annotations

import time
from typing import Any

import yaml

from tests.api_cases import REPO
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.pods import RUNTIME_CPU
from tests.cluster.harness.real_node import NODE_NAME
from tests.pods.conftest import apply, get, pods, wait_phase

STEPS, INTERVAL = 300, 25


def _training() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "manifests/samples/training-tiny-cpu.yaml").read_text())
    spec = document["spec"]
    spec["accelerator"]["hosts"] = 2
    spec["training"]["steps"] = STEPS
    spec["checkpoints"] = {"uri": "pvc://checkpoints/tiny", "intervalSteps": INTERVAL}
    spec["pod"] = {"resources": {"requests": {"cpu": RUNTIME_CPU, "memory": "1Gi"}}}
    return document


def _claim() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "checkpoints"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_two_host_training_survives_losing_a_pod_and_resumes_from_its_checkpoint(
    installed: LocalCluster, workloads: str
) -> None:
    apply(installed, workloads, _claim())
    apply(installed, workloads, _training())
    selector = "app.kubernetes.io/instance=tiny-train"

    def committed() -> int:
        status = get(installed, workloads, "gemmatraining", "tiny-train").get("status", {})
        step = (status.get("lastCheckpoint") or {}).get("step", 0)
        return int(step) if 0 < step < STEPS - INTERVAL else 0

    saved = _until(committed, 600, "a committed checkpoint before the last steps")
    first = pods(installed, workloads, selector)
    assert len(first) == 2
    assert {p["spec"]["nodeName"] for p in first} == {NODE_NAME}
    victim = next(
        p
        for p in first
        if p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "1"
    )
    installed.kubectl("-n", workloads, "delete", "pod", victim["metadata"]["name"], "--wait=false")

    done = wait_phase(installed, workloads, "gemmatraining", "tiny-train", phase="Succeeded", timeout=900)
    status = done["status"]
    assert status["progress"]["step"] == STEPS
    assert status["lastCheckpoint"]["step"] == STEPS
    assert status["attempt"] == 1, status
    assert status["restarts"] == 0, status
    (restart,) = status["restartHistory"]
    assert restart["counted"] is False, restart

    (leader,) = [
        p for p in pods(installed, workloads, selector)
        if p["status"]["phase"] == "Succeeded"
        and p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "0"
    ]  # fmt: skip
    log = installed.kubectl("-n", workloads, "logs", leader["metadata"]["name"], "-c", "runtime")
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert resumed, log[-3000:]
    step = int(resumed[0].split(" at step ")[1].split()[0])
    assert step >= saved, (step, saved)
    assert "distributed: process 0 of 2" in log
