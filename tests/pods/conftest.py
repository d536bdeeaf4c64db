"""The real-pod tier: our images built here, a control plane with a real kubelet node beside kwok's fake
TPU and GPU pools, and the chart-installed operator running from its own image under its own
ServiceAccount in a namespace that enforces the restricted Pod Security Standard. The workloads' CPU
pods run as real containers; the TPU-shaped ones stay simulated.

Without root or without the node's Debian packages the tier skips with the reason, unless
``GEMMA_REQUIRE_CLUSTER=1`` (CI), where that is a failure. The whole cluster lives for this package's
tests only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.chart.helm import Helm
from tests.cluster.conftest import _report
from tests.cluster.harness.binaries import BuildError
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.pods import RESTRICTED, RealCluster, install_operator, real_cluster
from tests.cluster.harness.real_node import unavailable_reason
from tests.cluster.harness.required import required
from tests.unit.packaging.generate import NAMESPACE


def _available() -> None:
    reason = unavailable_reason()
    if reason:
        raise BuildError(reason)


@pytest.fixture(scope="package")
def real(request: pytest.FixtureRequest) -> Iterator[RealCluster]:
    required("real node", _available)
    with real_cluster(log=lambda line: _report(request, line)) as started:
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in started.timings.items())
        _report(request, f"\n[pods] real node and images ready: {steps}")
        yield started


@pytest.fixture(scope="package")
def cluster(real: RealCluster) -> LocalCluster:
    return real.cluster


@pytest.fixture(scope="package")
def helm(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    assert cluster.bin_dir is not None
    return Helm(cluster.bin_dir / "helm", tmp_path_factory.mktemp("helm"), kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="package")
def installed(cluster: LocalCluster, helm: Helm) -> LocalCluster:
    """`helm install` of the chart with our images into a restricted namespace; the operator Ready."""
    install_operator(cluster, helm)
    return cluster


@pytest.fixture
def workloads(installed: LocalCluster, tmp_path: Path) -> Iterator[str]:
    """A restricted namespace for one test's workloads; on failure, what happened in it is saved."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    installed.kubectl("create", "namespace", name)
    installed.kubectl("label", "namespace", name, RESTRICTED)
    try:
        yield name
    finally:
        report = tmp_path / "diagnostics.txt"
        report.write_text(diagnostics(installed, [name, NAMESPACE]))
        installed.kubectl("delete", "namespace", name, "--wait=false")


def diagnostics(cluster: LocalCluster, namespaces: list[str]) -> str:
    parts: list[str] = []
    for namespace in namespaces:
        for args in (
            ["get", "all,gemmaservers,gemmatrainings,pvc", "-o", "wide"],
            ["get", "events", "--sort-by=.lastTimestamp"],
            ["logs", "--all-containers", "--prefix", "--tail=100", "-l", "app.kubernetes.io/managed-by"],
        ):
            parts.append(
                f"$ kubectl -n {namespace} {' '.join(args)}\n"
                + cluster.kubectl("-n", namespace, *args, check=False)
            )
    return "\n".join(parts)


def apply(cluster: LocalCluster, namespace: str, document: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", input_text=yaml.safe_dump(document))


def get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json"))
    return out


def wait_phase(
    cluster: LocalCluster, namespace: str, kind: str, name: str, *, phase: str, timeout: float
) -> dict[str, Any]:
    """The resource once its status.phase is ``phase`` for its current generation; a training that
    Failed ends the wait at once."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get(cluster, namespace, kind, name)
        status = obj.get("status", {})
        if status.get("phase") == phase and status.get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        if status.get("phase") == "Failed" and phase != "Failed":
            break
        time.sleep(2)
    raise AssertionError(f"{kind} {name} not {phase} after {timeout:.0f} s: {json.dumps(status)}")


def pods(cluster: LocalCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))
    items: list[dict[str, Any]] = out["items"]
    return items
