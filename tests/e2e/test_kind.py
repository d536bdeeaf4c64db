"""End to end on kind (needs Docker): build both images from the Dockerfile, load them into a kind
cluster, `helm install` the chart, serve the tiny CPU sample until Ready and get a completion through its
Service, train the tiny CPU sample to Succeeded, and uninstall cleanly. On failure the events,
`kubectl describe` and the pods' logs are written beside the test's temporary files.

Without a Docker engine the whole module skips with one line saying why.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import docker_unavailable_reason

REASON = docker_unavailable_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from pytest_kind import KindCluster  # type: ignore[import-untyped]  # noqa: E402

from tests.api_cases import REPO  # noqa: E402
from tests.cluster.chart.helm import Helm  # noqa: E402
from tests.e2e import kind  # noqa: E402
from tests.unit.packaging.generate import NAMESPACE, RELEASE  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"
WORKLOADS = "e2e-workloads"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    workdir = tmp_path_factory.mktemp("kind")
    created = kind.create("gemma-e2e", workdir, kind.tool("kubectl"))
    try:
        kind.build_and_load(created)
        yield created
    finally:
        created.delete()


@pytest.fixture(scope="module")
def helm(cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kind.tool("helm"), tmp_path_factory.mktemp("helm"), kubeconfig=cluster.kubeconfig_path)


@pytest.fixture(scope="module")
def installed(cluster: KindCluster, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with kind.collecting(cluster, [NAMESPACE], tmp_path_factory.mktemp("install")):
        kind.install_chart(helm, "operator.resyncSeconds=10", "operator.progressSeconds=5")
        cluster.kubectl("create", "namespace", WORKLOADS)
        cluster.kubectl("label", "namespace", WORKLOADS, "pod-security.kubernetes.io/enforce=restricted")
    yield
    cluster.kubectl("delete", "namespace", WORKLOADS, "--wait=true", "--timeout=180s")


def _wait(cluster: KindCluster, kind_name: str, name: str, phase: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj: dict[str, Any] = json.loads(
            cluster.kubectl("-n", WORKLOADS, "get", kind_name, name, "-o", "json")
        )
        status = obj.get("status", {})
        if status.get("phase") == phase and status.get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        if kind_name == "gemmatraining" and status.get("phase") == "Failed":
            break
        time.sleep(5)
    raise AssertionError(f"{kind_name} {name} not {phase} after {timeout:.0f} s: {json.dumps(status)}")


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        out: dict[str, Any] = json.loads(response.read())
    return out


def test_the_tiny_server_answers_a_completion_through_its_service(
    cluster: KindCluster, installed: None, tmp_path: Path
) -> None:
    with kind.collecting(cluster, [WORKLOADS, NAMESPACE], tmp_path):
        cluster.kubectl("-n", WORKLOADS, "apply", "-f", str(SAMPLES / "server-tiny-cpu.yaml"))
        _wait(cluster, "gemmaserver", "tiny", "Ready", timeout=900)
        with cluster.port_forward("service/tiny", 8000, "-n", WORKLOADS) as port:
            base = f"http://127.0.0.1:{port}/v1"
            with urllib.request.urlopen(f"{base}/models", timeout=60) as response:
                model = json.loads(response.read())["data"][0]["id"]
            answer = _post(f"{base}/completions", {"model": model, "prompt": "The weather", "max_tokens": 8})
        assert answer["choices"][0]["text"] is not None
        assert answer["usage"]["completion_tokens"] > 0


def test_the_tiny_training_succeeds(cluster: KindCluster, installed: None, tmp_path: Path) -> None:
    with kind.collecting(cluster, [WORKLOADS, NAMESPACE], tmp_path):
        cluster.kubectl("-n", WORKLOADS, "apply", "-f", str(SAMPLES / "training-tiny-cpu.yaml"))
        obj = _wait(cluster, "gemmatraining", "tiny-train", "Succeeded", timeout=1800)
        assert obj["status"]["completionTime"]


def test_uninstall_removes_the_operator_and_keeps_the_crds(
    cluster: KindCluster, helm: Helm, installed: None
) -> None:
    helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    left = cluster.kubectl("get", "all,clusterroles,clusterrolebindings", "-A", "-l", selector, "-o", "name")
    assert not left.strip()
    assert "gemmaservers.gemma.ai" in cluster.kubectl("get", "crds", "-o", "name")
