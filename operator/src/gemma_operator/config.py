"""Operator settings: typed, documented, read from the environment here and nowhere else.

Every variable is ``GEMMA_OPERATOR_<FIELD>`` (upper case), e.g. ``GEMMA_OPERATOR_NAMESPACES=team-a,team-b``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

SCRAPE_MONITOR_KINDS = ("PodMonitoring", "ServiceMonitor")


@dataclasses.dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    """Kubeconfig file; unset = in-cluster credentials in a pod, else $KUBECONFIG or ~/.kube/config."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty watches the whole cluster (needs cluster-wide RBAC)."""
    runtime_image: str = "ghcr.io/gemma-operator/gemma-runtime:0.1.0"
    """Image of the pods' runtime container, unless a resource sets spec.image."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of the runtime container."""
    field_manager: str = "gemma-operator"
    """Server-side apply field manager: one owner for every field the operator writes."""
    log_level: str = "INFO"
    """Operator log level."""
    bind_address: str = "0.0.0.0"
    """Address the health and metrics endpoints listen on (tests use 127.0.0.1)."""
    health_port: int = 8080
    """Port of the operator's /healthz liveness endpoint (0 disables it)."""
    metrics_port: int = 9090
    """Port of the operator's Prometheus /metrics (0 disables it)."""
    resync_seconds: float = 60.0
    """Seconds between re-applies of each resource's children (repairing edits made by hand) and
    status refreshes when no event triggers one."""
    progress_seconds: float = 10.0
    """Seconds between pulls of a running training's progress from its pod 0."""
    debounce_seconds: float = 0.5
    """A burst of child events (pods starting) within this many seconds becomes one status refresh."""
    stats_timeout_seconds: float = 1.0
    """Timeout, in seconds, of one pull of a pod's /stats or /progress."""
    runtime_port: int = 8000
    """Port the runtime serves its HTTP API and metrics on inside pods."""
    cpu_request: str = "2"
    """CPU requested by a runtime pod on a CPU node pool when spec.pod.resources does not say."""
    memory_request: str = "4Gi"
    """Memory requested by a runtime pod on a CPU node pool when spec.pod.resources does not say."""
    autoscaling_metric_name: str = "{name}"
    """Name a GemmaServer's HorizontalPodAutoscaler asks the custom metrics API for, with ``{name}`` the
    runtime's series (e.g. gemma_requests_waiting). The metrics adapter decides it: on GKE with Google
    Managed Prometheus and the Custom Metrics Stackdriver Adapter, ``prometheus.googleapis.com|{name}|gauge``;
    with the Prometheus Adapter, ``{name}``."""
    scrape_monitors: str = ""
    """Scrape configs to render for the server pods, comma-separated: ``PodMonitoring`` (Google Managed
    Prometheus, monitoring.googleapis.com/v1), ``ServiceMonitor`` (Prometheus Operator,
    monitoring.coreos.com/v1); each is applied only while its CRD is installed. Empty renders none."""

    def __post_init__(self) -> None:
        kinds = {k.strip() for k in self.scrape_monitors.split(",") if k.strip()}
        if unknown := sorted(kinds - set(SCRAPE_MONITOR_KINDS)):
            known = ", ".join(SCRAPE_MONITOR_KINDS)
            raise ValueError(f"scrape_monitors: unknown kind {', '.join(unknown)} (known: {known})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get("KUBECONFIG"):
            values["kubeconfig"] = env["KUBECONFIG"]
        for field in dataclasses.fields(cls):
            raw = env.get(f"GEMMA_OPERATOR_{field.name.upper()}")
            if raw is None:
                continue
            if field.name == "namespaces":
                values[field.name] = tuple(n.strip() for n in raw.split(",") if n.strip())
            elif field.type in ("int", int):
                values[field.name] = int(raw)
            elif field.type in ("float", float):
                values[field.name] = float(raw)
            else:
                values[field.name] = raw
        return cls(**values)  # type: ignore[arg-type]
