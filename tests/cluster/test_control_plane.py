"""The control plane the operator is tested against is real: the scheduler places TPU pods by
node pool labels, taints and `google.com/tpu` capacity; the Job controller completes and fails
Indexed Jobs; the garbage collector follows owner references; RBAC refuses a user without rights;
and the harness leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils

from tests.cluster.harness import binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.nodes import V5E_2X4, V5E_4X4
from tests.cluster.harness.wait import wait_for
from tests.cluster.harness.workloads import indexed_job, tpu_deployment


def _pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _job_condition(api: client.ApiClient, namespace: str, name: str) -> str | None:
    job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return str(cond.type)
    return None


def test_reports_the_pinned_kubernetes_version(cluster: LocalCluster) -> None:
    version = cluster.request("GET", "/version")
    assert version["gitVersion"] == binaries.KUBERNETES_VERSION


def test_tpu_deployment_lands_on_the_matching_node_pool(api_client: client.ApiClient, namespace: str) -> None:
    utils.create_from_dict(
        api_client, tpu_deployment("srv", "tpu-v5-lite-podslice", "2x4", 8), namespace=namespace
    )

    def ready_pod() -> client.V1Pod | None:
        for pod in _pods(api_client, namespace, "app=srv"):
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if ready:
                return pod
        return None

    pod = wait_for(ready_pod, 60, "the v5e 2x4 server pod to be Ready")
    assert pod.spec.node_name in V5E_2X4.node_names()
    assert pod.status.pod_ip.startswith("127.64.")  # the kwok pod CIDR is inside loopback


def test_unsatisfiable_topology_stays_pending_with_the_scheduler_reason(
    api_client: client.ApiClient, namespace: str
) -> None:
    utils.create_from_dict(
        api_client, tpu_deployment("odd", "tpu-v5-lite-podslice", "3x3", 8), namespace=namespace
    )
    core = client.CoreV1Api(api_client)

    def failed_scheduling() -> str | None:
        events = core.list_namespaced_event(namespace, field_selector="reason=FailedScheduling").items
        return events[0].message if events else None

    message = wait_for(failed_scheduling, 60, "a FailedScheduling event")
    assert "0/15 nodes are available" in message
    assert "node affinity/selector" in message
    (pod,) = _pods(api_client, namespace, "app=odd")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_indexed_job_lands_one_pod_per_host_and_completes(
    api_client: client.ApiClient, namespace: str
) -> None:
    job = indexed_job(
        "train",
        "tpu-v5-lite-podslice",
        "4x4",
        hosts=4,
        chips=4,
        annotations={"kwok.gemma.ai/succeed-after": "3s"},
    )
    utils.create_from_dict(api_client, job, namespace=namespace)
    assert (
        wait_for(lambda: _job_condition(api_client, namespace, "train"), 90, "the Job to finish")
        == "Complete"
    )
    pods = _pods(api_client, namespace, "job-name=train")
    assert sorted(p.spec.node_name for p in pods) == sorted(V5E_4X4.node_names())
    indexes = sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2", "3"]
    assert all(p.status.phase == "Succeeded" for p in pods)


def test_failing_pod_fails_the_job_after_its_backoff_limit(
    api_client: client.ApiClient, namespace: str
) -> None:
    job = indexed_job(
        "crash",
        "tpu-v5-lite-podslice",
        "4x4",
        hosts=4,
        chips=4,
        annotations={"kwok.gemma.ai/fail-exit-code": "3", "kwok.gemma.ai/fail-after": "1s"},
        backoff_limit=1,
    )
    utils.create_from_dict(api_client, job, namespace=namespace)
    assert (
        wait_for(lambda: _job_condition(api_client, namespace, "crash"), 120, "the Job to fail") == "Failed"
    )
    read = client.BatchV1Api(api_client).read_namespaced_job("crash", namespace)
    (failed,) = [c for c in read.status.conditions if c.type == "Failed"]
    assert failed.reason == "BackoffLimitExceeded"
    assert read.status.failed >= 2  # the first try and one retry
    exit_codes = {
        s.state.terminated.exit_code
        for p in _pods(api_client, namespace, "job-name=crash")
        for s in p.status.container_statuses or []
        if s.state.terminated
    }
    assert exit_codes == {3}


def test_deleting_an_owner_garbage_collects_its_children(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for i in range(3):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"child-{i}", "ownerReferences": [ref]}}
        )
    core.delete_namespaced_config_map("owner", namespace)

    def children_gone() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        return not any(name.startswith("child-") for name in names)

    assert wait_for(children_gone, 60, "the garbage collector to delete the children")


def test_rbac_refuses_a_service_account_without_rights(
    cluster: LocalCluster, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    with pytest.raises(urllib.error.HTTPError, match="403") as refused:
        cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert "cannot list resource" in refused.value.read().decode()
    # The same token works once RBAC grants the right: proof the 403 was authorization, not a bad token.
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-secrets"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "nobody-reads-secrets"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        },
    )
    listed = wait_for(
        lambda: _try(lambda: cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)),
        30,
        "the role binding to take effect",
    )
    assert listed["kind"] == "SecretList"


def _try(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception:
        return None


_CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    from pathlib import Path
    # As in a terminal: a shell without job control starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from tests.cluster.harness.control_plane import LocalCluster
    from tests.cluster.harness.nodes import CPU
    cluster = LocalCluster(bin_dir=Path(sys.argv[1]), pools=(CPU,))
    cluster.start()
    Path(sys.argv[2]).write_text(json.dumps({"pids": cluster.pids(), "workdir": str(cluster.workdir)}))
    while True:
        time.sleep(1)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_no_process_outlives_the_harness(cluster: LocalCluster, tmp_path: Path, how: signal.Signals) -> None:
    """Ctrl-C stops every component cleanly; even SIGKILL of the parent leaves no orphan."""
    info = tmp_path / "info.json"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cluster.bin_dir), str(info)],
        cwd=repo,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(info.exists, 120, "the child cluster to start")
        started = json.loads(info.read_text())
        assert len(started["pids"]) == 5
        assert all(_alive(pid) for pid in started["pids"])
        child.send_signal(how)
        child.wait(timeout=60)
        wait_for(lambda: not any(_alive(pid) for pid in started["pids"]), 30, "every component to exit")
        if how == signal.SIGINT:
            assert not Path(started["workdir"]).exists()
    finally:
        if info.exists():
            shutil.rmtree(json.loads(info.read_text())["workdir"], ignore_errors=True)
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_harness_reports_its_costs(cluster: LocalCluster) -> None:
    assert set(cluster.timings) >= {"binaries", "etcd", "kube-apiserver", "controllers", "nodes", "total"}
    memory = cluster.memory_mib()
    assert set(memory) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert all(mib > 0 for mib in memory.values())
