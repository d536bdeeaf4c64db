"""The metrics pipeline of a GemmaServer: scrape configs for its pods, so the HorizontalPodAutoscaler's
``Pods`` metrics (and dashboards) have a source. Google Managed Prometheus reads a ``PodMonitoring``, the
Prometheus Operator a ``ServiceMonitor``; the operator setting ``scrape_monitors`` picks which to render,
and the handler applies each only while its CRD is installed."""

from __future__ import annotations

from typing import Any

from gemma_operator.config import Settings
from gemma_operator.render import naming
from gemma_operator.render.env import render

# kind -> (apiVersion, template)
MONITORS = {
    "PodMonitoring": ("monitoring.googleapis.com/v1", "podmonitoring.yaml.j2"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitor.yaml.j2"),
}
SCRAPE_INTERVAL = "15s"  # the HPA syncs every 15 s: a slower scrape would leave it reading stale figures


def monitor_kinds(settings: Settings) -> list[str]:
    """The kinds ``scrape_monitors`` names (Settings refuses unknown ones), in a fixed order."""
    kinds = {k.strip() for k in settings.scrape_monitors.split(",")}
    return [kind for kind in MONITORS if kind in kinds]


def autoscaling_metric(settings: Settings, series: str) -> str:
    """The name the HPA asks the metrics API for: the adapter's spelling of the runtime's ``series``."""
    return settings.autoscaling_metric_name.replace("{name}", series)


def render_monitors(obj: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """The scrape configs of a GemmaServer's pods (PodMonitoring) or Service (ServiceMonitor)."""
    meta = obj["metadata"]
    name = meta["name"]
    return [
        render(
            MONITORS[kind][1],
            name=naming.child_name(name, limit=253),
            namespace=meta["namespace"],
            labels=naming.server_labels(name),
            owner=naming.owner_reference(obj),
            selector=naming.server_selector(name),
            interval=SCRAPE_INTERVAL,
        )
        for kind in monitor_kinds(settings)
    ]
