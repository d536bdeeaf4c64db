"""The operator's Prometheus metrics (names documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("gemma_operator_reconciles_total", "Reconciles by kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "gemma_operator_reconcile_seconds",
    "Time to reconcile one resource.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESOURCES = Gauge("gemma_operator_resources", "Resources by kind and phase.", ["kind", "phase"])


def serve(port: int, address: str) -> None:
    if port:
        start_http_server(port, addr=address)
