"""The metrics pipeline on a real control plane: with ``scrapeMonitors: [ServiceMonitor]`` the operator,
running as the ServiceAccount the chart grants for that value, renders nothing while the CRD is absent
(and reconciles as before), and applies the GemmaServer's ServiceMonitor once the Prometheus Operator's
own CRD (from its Go module, so its schema checks ours) is installed: owned by the server, selecting its
Service's label and port. The cluster is this module's own (the session's has no monitoring CRDs and its
operator renders none)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api_cases import merge, sample
from tests.cluster.chart.helm import Helm
from tests.cluster.harness.binaries import BuildError, cache_root, ensure_binaries, module_download
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.jobset import wait_established
from tests.cluster.harness.operator import OperatorProcess, as_service_account
from tests.cluster.harness.required import required
from tests.cluster.harness.wait import wait_for
from tests.unit.packaging.generate import NAMESPACE

MODULE, VERSION = "github.com/prometheus-operator/prometheus-operator", "v0.85.0"
CRD = "monitoring.coreos.com_servicemonitors.yaml"  # example/prometheus-operator-crd/ in the module
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
NAME = "tiny-scraped"


def _servicemonitor_crd() -> Path:
    """The Prometheus Operator's ServiceMonitor CRD, from its Go module (cached)."""
    cached = cache_root().parent / "prometheus-operator" / VERSION / CRD
    if not cached.is_file():
        if shutil.which("go") is None:
            raise BuildError(f"{CRD} is not cached and Go is not installed to download {MODULE}")
        with tempfile.TemporaryDirectory(prefix="gemma-promop-") as work:
            source = Path(module_download(MODULE, VERSION, Path(work))["Dir"])
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "example" / "prometheus-operator-crd" / CRD, cached)
    return cached


@pytest.fixture(scope="module")
def parts() -> tuple[Path, Path]:
    return required("control plane or ServiceMonitor CRD", lambda: (ensure_binaries(), _servicemonitor_crd()))


@contextlib.contextmanager
def _operator(cluster: LocalCluster) -> Iterator[OperatorProcess]:
    """Our CRDs, the chart's RBAC for ``scrapeMonitors={ServiceMonitor}``, and the operator as that
    ServiceAccount with the same setting."""
    repo = Path(__file__).resolve().parents[3]
    cluster.kubectl("apply", "-f", str(repo / "crds"))
    cluster.kubectl("create", "namespace", NAMESPACE)
    helm = Helm(Path(cluster.binary("helm")), cluster.workdir / "helm")
    docs = [d for d in helm.template("operator.scrapeMonitors={ServiceMonitor}") if d["kind"] in RBAC_KINDS]
    cluster.kubectl(
        "apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    wait_established(cluster, "gemmaservers.gemma.ai")
    with as_service_account(
        cluster, NAMESPACE, {"GEMMA_OPERATOR_SCRAPE_MONITORS": "ServiceMonitor"}
    ) as process:
        yield process


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", *args, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def test_the_service_monitor_is_applied_once_its_crd_is_installed(parts: tuple[Path, Path]) -> None:
    bin_dir, crd = parts
    with LocalCluster(bin_dir=bin_dir) as cluster, _operator(cluster):
        cluster.kubectl("create", "namespace", "scraped")
        server = merge(sample("server-tiny-cpu"), {"metadata": {"name": NAME, "namespace": "scraped"}})
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(server))
        wait_for(lambda: _get(cluster, "-n", "scraped", "service", NAME), 60, "the server's Service")
        # Without the CRD the server reconciles as before; the CRD comes later, as on a real cluster.
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        wait_established(cluster, "servicemonitors.monitoring.coreos.com")
        monitor = wait_for(
            lambda: _get(cluster, "-n", "scraped", "servicemonitors.monitoring.coreos.com", NAME),
            60,
            "the ServiceMonitor after its CRD was installed",
        )
        service = _get(cluster, "-n", "scraped", "service", NAME)
        owner = _get(cluster, "-n", "scraped", "gemmaserver", NAME)
        assert service is not None
        assert owner is not None
        assert monitor["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
            (service["spec"]["ports"][0]["name"], "/metrics")
        ]
