"""The metrics pipeline the autoscaler needs: the HPA asks for the runtime's series under the name the
metrics adapter gives it (an operator setting: GKE's adapter spells it prometheus.googleapis.com|...|gauge),
and the scrape configs the settings name (Google Managed Prometheus PodMonitoring, Prometheus Operator
ServiceMonitor) select this server's pods or Service on the port the runtime serves /metrics on."""

from __future__ import annotations

from typing import Any

import pytest

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.monitoring import render_monitors
from gemma_operator.render.serving import render_server
from gemma_runtime import metric_names
from tests.api_cases import DELETE, merge, sample

GKE = "prometheus.googleapis.com|{name}|gauge"


def _doc(autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
    patch: dict[str, Any] = {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}}
    if autoscaling:
        patch["spec"] = {"autoscaling": autoscaling}
    return merge(sample("server-gemma2-9b-int8-v6e"), patch)


def _children(doc: dict[str, Any], settings: Settings) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in render_server(doc, parse(doc), settings) + render_monitors(doc, settings)}


@pytest.mark.parametrize(
    ("autoscaling", "series"),
    [
        ({"targetQueueDepth": 8}, metric_names.REQUESTS_WAITING),
        ({"targetQueueDepth": DELETE, "targetBatchOccupancy": 75}, metric_names.BATCH_OCCUPANCY_PERCENT),
    ],
)
def test_the_hpa_asks_for_the_series_under_the_adapters_name(
    autoscaling: dict[str, Any], series: str
) -> None:
    doc = _doc(autoscaling)
    for settings, expected in (
        (Settings(), series),
        (Settings(autoscaling_metric_name=GKE), f"prometheus.googleapis.com|{series}|gauge"),
    ):
        (metric,) = _children(doc, settings)["HorizontalPodAutoscaler"]["spec"]["metrics"]
        assert metric["pods"]["metric"]["name"] == expected


def test_no_scrape_config_unless_the_settings_name_one() -> None:
    assert render_monitors(_doc(), Settings()) == []


def test_the_scrape_configs_select_this_servers_pods_and_service_on_the_metrics_port() -> None:
    children = _children(_doc(), Settings(scrape_monitors="ServiceMonitor, PodMonitoring"))
    deployment, service = children["Deployment"], children["Service"]
    pod = deployment["spec"]["template"]
    container_ports = {
        p["name"] for c in pod["spec"]["containers"] if c["name"] == "runtime" for p in c["ports"]
    }
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    pods = children["PodMonitoring"]
    assert pods["apiVersion"] == "monitoring.googleapis.com/v1"
    assert pods["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in pods["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in container_ports
    monitor = children["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in service_ports
    for child in (pods, monitor):  # deleted with the GemmaServer
        assert child["metadata"]["ownerReferences"][0]["uid"] == PLACEHOLDER_UID
        assert child["metadata"]["namespace"] == "ns"


def test_an_unknown_scrape_config_kind_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="scrape_monitors: unknown kind PodMonitor "):
        Settings.from_env({"GEMMA_OPERATOR_SCRAPE_MONITORS": "PodMonitor"})
    assert (
        Settings.from_env({"GEMMA_OPERATOR_SCRAPE_MONITORS": "PodMonitoring"}).scrape_monitors
        == "PodMonitoring"
    )
