"""The metrics pipeline on a real control plane: with ``scrapeMonitors: [ServiceMonitor]`` the operator,
running as the ServiceAccount the chart grants for that value, renders nothing while the CRD is absent
(and reconciles as before), and applies the GemmaServer's ServiceMonitor once the Prometheus Operator's
own CRD (from its Go module, so its schema checks ours) is installed: owned by the server, selecting its
Service's label and port. The cluster is this module's own (the session's has no monitoring CRDs and its
operator renders none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.api_cases import merge, sample
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.crds import SERVICE_MONITOR, crd_file, install_crd
from tests.cluster.harness.required import required
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.chart_operator import chart_operator

NAME = "tiny-scraped"


def _parts() -> Path:
    crd_file(SERVICE_MONITOR)
    return ensure_binaries()


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return required("control plane or ServiceMonitor CRD", _parts)


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", *args, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def test_the_service_monitor_is_applied_once_its_crd_is_installed(bin_dir: Path) -> None:
    settings = {"GEMMA_OPERATOR_SCRAPE_MONITORS": "ServiceMonitor"}
    with (
        LocalCluster(bin_dir=bin_dir) as cluster,
        chart_operator(cluster, ["operator.scrapeMonitors={ServiceMonitor}"], settings),
    ):
        cluster.kubectl("create", "namespace", "scraped")
        server = merge(sample("server-tiny-cpu"), {"metadata": {"name": NAME, "namespace": "scraped"}})
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(server))
        wait_for(lambda: _get(cluster, "-n", "scraped", "service", NAME), 60, "the server's Service")
        # Without the CRD the server reconciles as before; the CRD comes later, as on a real cluster.
        install_crd(cluster, SERVICE_MONITOR)
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
