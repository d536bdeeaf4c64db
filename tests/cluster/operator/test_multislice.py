"""Multislice trainings on a real control plane with the real JobSet controller (built from its Go module,
webhooks served on loopback): two v5e 4x4 slices become one JobSet with one Indexed Job per slice, each
slice alone on its own node pool (JobSet's exclusive placement, scheduled for real), every pod with its
own jax process id and its own slice's hostnames; a failed slice restarts the whole JobSet as the next
attempt, counted or not as our failure policy says; the real runtime's progress on slice 0's pod 0 and
the phases come through. The operator runs as the ServiceAccount the chart (manifests/install.yaml) grants.

The cluster is this module's own: two v5e 4x4 pools, and JobSet installed (the session's cluster has
one 4x4 pool and no JobSet, which its tests rely on)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemma_runtime.config import distributed
from gemma_runtime.train.command import sample_data
from tests.api_cases import merge, sample
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.jobset import ensure_jobset, start_jobset, wait_established
from tests.cluster.harness.nodes import V5E_4X4
from tests.cluster.harness.operator import OperatorProcess, as_service_account
from tests.cluster.harness.required import required
from tests.cluster.harness.runtime import RuntimeProcess, rendered_config
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.test_training import _fail
from tests.kubelet import resolve_env
from tests.unit.packaging.generate import NAMESPACE, install_yaml

POOLS = (dataclasses.replace(V5E_4X4, name="v5e-4x4-a"), dataclasses.replace(V5E_4X4, name="v5e-4x4-b"))
POOL_OF = {node: pool.name for pool in POOLS for node in pool.node_names()}
NAME = "gemma-2b-multislice"
HOSTS, SLICES = 4, 2
TRAINING = merge(
    sample("training-gemma-2b-v5e"),
    {
        "metadata": {"name": NAME},
        "spec": {
            "accelerator": {"numSlices": SLICES},
            "parallelism": {"data": SLICES},  # one replica per slice
            "queueName": None,
        },
    },
)
TRAINING["spec"]["pod"] = {}
SLICE = "jobset.sigs.k8s.io/job-index"
INDEX = "batch.kubernetes.io/job-completion-index"
RBAC_KINDS = {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def binaries() -> tuple[Path, Path]:
    """The control plane's binaries and JobSet's folder, built when missing."""
    return required("control plane with JobSet", lambda: (ensure_binaries(), ensure_jobset()))


@contextlib.contextmanager
def _cluster(bin_dir: Path) -> Iterator[LocalCluster]:
    """A control plane with the two pools, our CRDs and the operator's ServiceAccount and RBAC."""
    with LocalCluster(bin_dir=bin_dir, pools=POOLS) as cluster:
        # The chart rendered as `make manifests` renders manifests/install.yaml (so a chart change counts
        # before it is regenerated), keeping what the operator needs to run here as its ServiceAccount.
        install = install_yaml(Path(cluster.binary("helm")))
        docs = [d for d in yaml.safe_load_all(install) if d and d["kind"] in RBAC_KINDS]
        listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        cluster.kubectl("apply", "-f", "-", input_text=listing)
        wait_established(cluster, "gemmatrainings.gemma.ai")
        yield cluster


@pytest.fixture(scope="module")
def jobset_cluster(binaries: tuple[Path, Path]) -> Iterator[LocalCluster]:
    bin_dir, jobset = binaries
    with _cluster(bin_dir) as cluster:
        start_jobset(cluster, jobset)
        yield cluster


@pytest.fixture(scope="module")
def operator(jobset_cluster: LocalCluster) -> Iterator[OperatorProcess]:
    with as_service_account(jobset_cluster, NAMESPACE) as process:
        yield process


@pytest.fixture
def namespace(jobset_cluster: LocalCluster, operator: OperatorProcess) -> Iterator[str]:
    name = f"ms-{os.urandom(4).hex()}"
    jobset_cluster.kubectl("create", "namespace", name)
    yield name
    # The next test needs every host: wait for this one's pods to go.
    jobset_cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")


def _kubectl_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def _status(
    cluster: LocalCluster, namespace: str, check: Any, what: str, *, timeout: float = 120, name: str = NAME
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status: dict[str, Any] = _kubectl_json(cluster, "-n", namespace, "get", "gemmatraining", name).get(
            "status", {}
        )
        return status if check(status) else None

    try:
        return wait_for(probe, timeout, what)
    except TimeoutError:
        status = _kubectl_json(cluster, "-n", namespace, "get", "gemmatraining", name).get("status")
        raise AssertionError(f"{what}; status: {json.dumps(status)}") from None


def _pods(cluster: LocalCluster, namespace: str, attempt: int, name: str = NAME) -> list[dict[str, Any]]:
    selector = f"gemma.ai/training={name},gemma.ai/attempt={attempt}"
    items: list[dict[str, Any]] = _kubectl_json(cluster, "-n", namespace, "get", "pods", "-l", selector)[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _running(
    cluster: LocalCluster, namespace: str, attempt: int, name: str = NAME
) -> dict[tuple[int, int], dict[str, Any]]:
    """Every pod of ``attempt`` once all run, by (slice, index)."""

    def probe() -> dict[tuple[int, int], dict[str, Any]] | None:
        pods = [p for p in _pods(cluster, namespace, attempt, name) if p["status"].get("phase") == "Running"]
        by_place = {
            (int(p["metadata"]["annotations"][SLICE]), int(p["metadata"]["annotations"][INDEX])): p
            for p in pods
        }
        return by_place if len(by_place) == HOSTS * SLICES else None

    return wait_for(probe, 120, f"{HOSTS * SLICES} running pods of attempt {attempt}")


def test_two_slices_are_one_job_each_alone_on_a_pool_with_distinct_process_ids(
    jobset_cluster: LocalCluster, namespace: str
) -> None:
    cluster = jobset_cluster
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(TRAINING))
    pods = _running(cluster, namespace, 0)

    pools = {
        s: {POOL_OF[p["spec"]["nodeName"]] for (slice_id, _), p in pods.items() if slice_id == s}
        for s in range(SLICES)
    }
    assert all(len(used) == 1 for used in pools.values()), pools  # a slice never spans two pools
    assert pools[0] | pools[1] == {pool.name for pool in POOLS}  # and no two slices share one
    assert len({p["spec"]["nodeName"] for p in pods.values()}) == HOSTS * SLICES

    coordinator = f"{NAME}-a0-slice-0-0.{NAME}.{namespace}.svc"
    ids = []
    for (slice_id, index), pod in sorted(pods.items()):
        env = resolve_env(pod["spec"]["containers"][0]["env"], pod["metadata"])
        cluster_env = distributed(env)
        assert cluster_env is not None
        assert (cluster_env.coordinator, cluster_env.processes) == (f"{coordinator}:8476", HOSTS * SLICES)
        ids.append(cluster_env.process_id)
        assert env["MEGASCALE_SLICE_ID"] == str(slice_id)
        assert env["TPU_WORKER_ID"] == str(index)
        assert env["MEGASCALE_NUM_SLICES"] == str(SLICES)
        assert env["MEGASCALE_COORDINATOR_ADDRESS"] == coordinator
        own = [pods[slice_id, i]["spec"] for i in range(HOSTS)]
        assert env["TPU_WORKER_HOSTNAMES"].split(",") == [f"{s['hostname']}.{s['subdomain']}" for s in own]
    assert ids == list(range(HOSTS * SLICES))
    # One Job per slice, found by the training's labels like a single slice's Job.
    jobs = _kubectl_json(cluster, "-n", namespace, "get", "jobs", "-l", f"gemma.ai/training={NAME}")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [f"{NAME}-a0-slice-{s}" for s in range(SLICES)]
    assert {
        (j["spec"]["completions"], j["spec"]["parallelism"], j["spec"]["completionMode"]) for j in jobs
    } == {(HOSTS, HOSTS, "Indexed")}

    status = _status(cluster, namespace, lambda s: s.get("phase") == "Running", "Running")
    assert status["attempt"] == 0
    for pod in pods.values():
        cluster.kubectl(
            "-n", namespace, "annotate", "pod", pod["metadata"]["name"], "kwok.gemma.ai/succeed-after=1s"
        )
    status = _status(cluster, namespace, lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["completionTime"]
    assert status["restarts"] == 0


def test_a_failed_slice_restarts_the_whole_jobset_counting_only_application_errors(
    jobset_cluster: LocalCluster, namespace: str
) -> None:
    cluster = jobset_cluster
    doc = merge(TRAINING, {"spec": {"failurePolicy": {"maxRestarts": 1}}})
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(doc))
    first = _running(cluster, namespace, 0)
    _fail(cluster, namespace, first[1, 2]["metadata"]["name"], 1)
    status = _status(cluster, namespace, lambda s: s.get("attempt") == 1, "the first restart")
    assert status["restarts"] == 1
    assert status["restartHistory"][0]["counted"] is True
    assert "exit code 1" in status["restartHistory"][0]["reason"]
    # The whole JobSet restarts, the healthy slice 0 too, as the next attempt's JobSet.
    second = _running(cluster, namespace, 1)
    assert not {p["metadata"]["uid"] for p in first.values()} & {
        p["metadata"]["uid"] for p in second.values()
    }
    wait_for(
        lambda: (
            cluster.kubectl("-n", namespace, "get", "jobsets", "-o", "name").split()
            == [f"jobset.jobset.x-k8s.io/{NAME}-a1"]
        ),
        60,
        "the failed attempt's JobSet to go",
    )

    _fail(cluster, namespace, second[0, 0]["metadata"]["name"], 143, disruption=True)
    status = _status(cluster, namespace, lambda s: s.get("attempt") == 2, "the disruption restart")
    assert status["restarts"] == 1  # a disruption does not count
    assert status["restartHistory"][1]["counted"] is False
    assert "DisruptionTarget" in status["restartHistory"][1]["reason"]

    third = _running(cluster, namespace, 2)
    _fail(cluster, namespace, third[0, 3]["metadata"]["name"], 3)
    status = _status(cluster, namespace, lambda s: s.get("phase") == "Failed", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MaxRestartsExceeded"
    assert "exit code 3" in failed["message"]


def test_a_long_named_training_is_admitted_by_jobset_and_runs(
    jobset_cluster: LocalCluster, namespace: str
) -> None:
    """JobSet's webhook refuses pod names past 63 characters; the operator shortens the JobSet's name."""
    cluster, name = jobset_cluster, "gemma2-9b-pretraining-on-two-v5e-slices-with-a-long-name"
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input_text=json.dumps(merge(TRAINING, {"metadata": {"name": name}})),
    )
    pods = _running(cluster, namespace, 0, name)
    assert max(len(p["metadata"]["name"]) for p in pods.values()) <= 63
    _status(cluster, namespace, lambda s: s.get("phase") == "Running", "Running", name=name)


def test_progress_of_the_real_runtime_on_slice_0_pod_0_comes_through(
    jobset_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    cluster = jobset_cluster
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(TRAINING))
    pods = _running(cluster, namespace, 0)
    rendered = rendered_config(cluster, f"gemma.ai/training={NAME}", namespace)
    assert rendered["num_slices"] == SLICES
    # What a laptop can run in place of gemma-2b on two slices: one process of the tiny preset.
    local = {
        "model": {"variant": "tiny"},
        "data": {"path": str(sample_data()), "format": "text"},
        "training": {**rendered["training"], "steps": 100_000, "global_batch_size": 8,
                     "sequence_length": 64, "precision": "f32", "remat": "none"},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "num_slices": 1,
        "checkpoints": {"directory": str(tmp_path / "ck"), "interval_steps": 10, "keep": 2},
        "host": pods[0, 0]["status"]["podIP"],
    }  # fmt: skip
    runtime = RuntimeProcess("train", {**rendered, **local}, tmp_path)
    try:
        status = _status(
            cluster,
            namespace,
            lambda s: s.get("phase") == "Running" and s.get("progress", {}).get("step", 0) >= 10,
            "Running with progress past step 10",
            timeout=240,
        )
    finally:
        runtime.stop()
    assert status["progress"]["totalSteps"] == 100_000
    assert 0 < status["progress"]["loss"] < 8
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["message"].startswith(f"{HOSTS * SLICES} hosts running")
    row = cluster.kubectl("-n", namespace, "get", "gemmatrainings").splitlines()[1].split()
    assert row[-4] == "Running"  # PHASE, STEP, LOSS, then AGE
    assert int(row[-3]) >= 10


def test_jobset_installed_after_the_operator_started_unblocks_a_waiting_training(
    binaries: tuple[Path, Path],
) -> None:
    """The operator asks again while the JobSet API is missing, so installing JobSet later is enough
    (its own cluster: the module's has JobSet from the start)."""
    bin_dir, jobset = binaries
    with _cluster(bin_dir) as cluster, as_service_account(cluster, NAMESPACE):
        cluster.kubectl("create", "namespace", "late")
        cluster.kubectl("-n", "late", "apply", "-f", "-", input_text=json.dumps(TRAINING))
        status = _status(cluster, "late", lambda s: s.get("phase") == "Failed", "Blocked without JobSet")
        assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "Blocked"
        start_jobset(cluster, jobset)
        _running(cluster, "late", 0)
        status = _status(cluster, "late", lambda s: s.get("phase") == "Running", "Running with JobSet")
        assert status["attempt"] == 0
