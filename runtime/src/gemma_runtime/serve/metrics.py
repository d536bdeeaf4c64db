"""Serving metrics: Prometheus series for /metrics and the JSON figures the operator pulls from /stats.

Prometheus names (documented in the README): gemma_time_to_first_token_seconds,
gemma_time_per_output_token_seconds and gemma_e2e_request_latency_seconds (histograms),
gemma_requests_waiting, gemma_slots_in_use and gemma_batch_occupancy_percent (gauges; the names the
operator's autoscaler targets live in gemma_runtime.metric_names), the same figures under the vLLM names
the Inference Gateway's endpoint picker reads (vllm:num_requests_waiting, vllm:num_requests_running,
vllm:kv_cache_usage_perc: a fraction; each slot reserves its whole KV cache, so slots in use over slots
is the cache in use) and its two info gauges (vllm:lora_requests_info: no adapters;
vllm:cache_config_info{block_size,num_gpu_blocks}: one block per slot), gemma_mesh_devices{axis} and
gemma_device_memory_bytes{part} (gauges: the data x tensor mesh, and the bytes of weights and KV cache
on the most loaded device, set once the engine is built), gemma_warm_up_seconds, and
gemma_compilation_cache_hits / _misses (gauges: programs this process loaded from JAX's persistent
compilation cache, or compiled and wrote to it), gemma_prompt_tokens_total,
gemma_generation_tokens_total and gemma_requests_finished_total{reason} (counters).
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gemma_runtime import compilation
from gemma_runtime import metric_names as names
from gemma_runtime.serve.scheduler import Request

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
RATE_WINDOW_S = 10.0  # generated tokens/s is measured over this window
TTFT_WINDOW = 200  # the p50 time to first token is over the latest requests


class ServeMetrics:
    """Implements the scheduler's Observer; ``queue`` reports (waiting, running, slots) when scraped."""

    def __init__(self, queue: Callable[[], tuple[int, int, int]]) -> None:
        self.registry = CollectorRegistry()
        self._queue = queue
        self.ttft = Histogram(
            "gemma_time_to_first_token_seconds",
            "Arrival to first generated token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "gemma_time_per_output_token_seconds",
            "Mean time between generated tokens after the first, per request.",
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "gemma_e2e_request_latency_seconds",
            "Arrival to the last token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        for name, doc, figure in (
            (names.REQUESTS_WAITING, "Requests queued for a slot.", self._waiting),
            (names.SLOTS_IN_USE, "Decode slots holding a request.", self._running),
            (names.BATCH_OCCUPANCY_PERCENT, "Decode slots in use, percent of all.", self._occupancy),
            (names.VLLM_REQUESTS_WAITING, "Requests queued for a slot (vLLM's name).", self._waiting),
            (names.VLLM_REQUESTS_RUNNING, "Requests decoding (vLLM's name).", self._running),
            (names.VLLM_KV_CACHE_USAGE, "KV cache in use, a fraction (vLLM's name).", self._kv_usage),
        ):
            Gauge(name, doc, registry=self.registry).set_function(figure)
        # The picker's two info gauges (vLLM's label names): no LoRA adapters are served or loadable, and
        # a cache "block" is one slot's whole KV cache (block_size tokens, num_gpu_blocks = slots), set
        # once the engine is built.
        lora = ["running_lora_adapters", "waiting_lora_adapters", "max_lora"]
        Gauge(
            names.VLLM_LORA_INFO, "LoRA adapters (vLLM's name): none.", lora, registry=self.registry
        ).labels("", "", "0").set(1)
        self.cache_config = Gauge(
            names.VLLM_CACHE_CONFIG,
            "KV cache shape (vLLM's name): a block is one decode slot's cache.",
            ["block_size", "num_gpu_blocks"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "gemma_prompt_tokens", "Prompt tokens prefilled.", registry=self.registry
        )
        self.generated_tokens = Counter(
            "gemma_generation_tokens", "Tokens generated.", registry=self.registry
        )
        self.finished_requests = Counter(
            "gemma_requests_finished", "Requests finished, by reason.", ["reason"], registry=self.registry
        )
        self.mesh = Gauge(
            "gemma_mesh_devices",
            "Devices along each mesh axis (data, tensor).",
            ["axis"],
            registry=self.registry,
        )
        self.device_memory = Gauge(
            "gemma_device_memory_bytes",
            "Bytes the most loaded device holds, by part (weights, kv_cache).",
            ["part"],
            registry=self.registry,
        )
        self.warm_up = Gauge(
            "gemma_warm_up_seconds",
            "Seconds the start took to compile (or load from the compilation cache) every step shape.",
            registry=self.registry,
        )
        Gauge(
            "gemma_compilation_cache_hits",
            "Programs loaded from the persistent compilation cache.",
            registry=self.registry,
        ).set_function(lambda: compilation.USE.snapshot()[0])
        Gauge(
            "gemma_compilation_cache_misses",
            "Programs compiled and written to the persistent compilation cache.",
            registry=self.registry,
        ).set_function(lambda: compilation.USE.snapshot()[1])
        self._lock = threading.Lock()
        self._recent_steps: collections.deque[tuple[float, int]] = collections.deque()
        self._recent_ttft: collections.deque[float] = collections.deque(maxlen=TTFT_WINDOW)

    def _waiting(self) -> float:
        return self._queue()[0]

    def _running(self) -> float:
        return self._queue()[1]

    def _kv_usage(self) -> float:
        _, running, slots = self._queue()
        return running / slots if slots else 0.0

    def _occupancy(self) -> float:
        return 100.0 * self._kv_usage()

    def engine_built(
        self, mesh: dict[str, int], weight_bytes: int, kv_cache_bytes: int, warm_up_seconds: float | None
    ) -> None:
        if warm_up_seconds is not None:
            self.warm_up.set(warm_up_seconds)
        for axis in ("data", "tensor"):
            self.mesh.labels(axis).set(mesh[axis])
        self.device_memory.labels("weights").set(weight_bytes)
        self.device_memory.labels("kv_cache").set(kv_cache_bytes)

    def engine_shape(self, slots: int, max_len: int) -> None:
        """The cache config the endpoint picker reads: ``slots`` blocks of ``max_len`` tokens."""
        self.cache_config.clear()
        self.cache_config.labels(str(max_len), str(slots)).set(1)

    def step(self, generated: int, prompt_tokens: int, seconds: float) -> None:
        self.generated_tokens.inc(generated)
        self.prompt_tokens.inc(prompt_tokens)
        now = time.monotonic()
        with self._lock:
            self._recent_steps.append((now, generated))
            while self._recent_steps and self._recent_steps[0][0] < now - RATE_WINDOW_S:
                self._recent_steps.popleft()

    def finished(self, request: Request) -> None:
        self.finished_requests.labels(request.finish_reason or "unknown").inc()
        end = request.finished_at or time.monotonic()
        self.e2e.observe(end - request.arrived)
        if request.first_token_at is not None:
            ttft = request.first_token_at - request.arrived
            self.ttft.observe(ttft)
            with self._lock:
                self._recent_ttft.append(ttft)
            if request.generated > 1:
                self.tpot.observe((end - request.first_token_at) / (request.generated - 1))

    def stats(self) -> dict[str, float | int]:
        """The operator's /stats document."""
        waiting, running, _ = self._queue()
        now = time.monotonic()
        with self._lock:
            recent = [n for t, n in self._recent_steps if t >= now - RATE_WINDOW_S]
            ttfts = list(self._recent_ttft)
        return {
            "requests_running": running,
            "requests_waiting": waiting,
            "generated_tokens_per_second": round(sum(recent) / RATE_WINDOW_S, 3),
            "time_to_first_token_p50_seconds": round(statistics.median(ttfts), 4) if ttfts else 0.0,
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
