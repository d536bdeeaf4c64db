"""What a training reports: ``/progress`` (JSON the operator copies into the GemmaTraining's status),
``/metrics`` (Prometheus) and ``/healthz``, served by process 0 from a background thread; the same
``/progress`` document is the container's termination message when the run ends."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import prometheus_client as prom

from gemma_runtime.endpoints import Endpoints


@dataclasses.dataclass
class Figures:
    """The latest figures; ``as_json`` is the /progress contract (gemma_operator reads these keys)."""

    name: str
    total_steps: int
    step: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    mfu: float | None = None
    eta_seconds: float | None = None
    last_checkpoint: dict[str, Any] | None = None
    state: str = "Starting"  # Starting, Running, Finished, Interrupted, Failed

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("loss", "learning_rate", "tokens_per_second", "mfu"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 6)
        if out["eta_seconds"] is not None:
            out["eta_seconds"] = int(out["eta_seconds"])
        return out


class Metrics:
    """The Prometheus series, in a registry of their own (one training per process)."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.step = prom.Gauge("gemma_train_step", "Optimizer steps done.", registry=r)
        self.total = prom.Gauge("gemma_train_total_steps", "Steps the training will run.", registry=r)
        self.loss = prom.Gauge("gemma_train_loss", "Training loss of the last logged step.", registry=r)
        self.lr = prom.Gauge("gemma_train_learning_rate", "Learning rate of the last step.", registry=r)
        self.rate = prom.Gauge("gemma_train_tokens_per_second", "Training throughput.", registry=r)
        self.mfu = prom.Gauge("gemma_train_mfu", "Model-FLOPs utilisation (0-1).", registry=r)
        self.tokens = prom.Counter("gemma_train_tokens", "Tokens trained on.", registry=r)
        self.step_seconds = prom.Histogram(
            "gemma_train_step_seconds",
            "Wall time per optimizer step.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.checkpoint_step = prom.Gauge(
            "gemma_train_checkpoint_step", "Step of the last committed checkpoint.", registry=r
        )
        self.checkpoint_seconds = prom.Histogram(
            "gemma_train_checkpoint_seconds", "Time the step loop waited for a save to start.", registry=r
        )


class Server:
    """/progress, /metrics and /healthz on a background thread; stopped by ``close``."""

    def __init__(self, host: str, port: int, figures: Figures, metrics: Metrics) -> None:
        self.figures, self.metrics, self.lock = figures, metrics, threading.Lock()
        self._endpoints = Endpoints(
            host,
            port,
            {
                "/progress": self._progress,
                "/metrics": lambda: (prom.CONTENT_TYPE_LATEST, prom.generate_latest(metrics.registry)),
                "/healthz": lambda: ("text/plain", b"ok\n"),
            },
        )
        self.port = self._endpoints.port

    def _progress(self) -> tuple[str, bytes]:
        with self.lock:
            return "application/json", json.dumps(self.figures.as_json()).encode()

    def update(self, **changes: Any) -> None:
        with self.lock:
            for key, value in changes.items():
                setattr(self.figures, key, value)

    def close(self) -> None:
        self._endpoints.close()


class Rate:
    """Tokens per second over the steps since the last report (compilation excluded by the caller)."""

    def __init__(self) -> None:
        self.since, self.tokens = time.monotonic(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def take(self) -> float:
        now = time.monotonic()
        rate = self.tokens / max(now - self.since, 1e-9)
        self.since, self.tokens = now, 0
        return rate
