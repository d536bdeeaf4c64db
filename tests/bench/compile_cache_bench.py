"""A server's second start with JAX's persistent compilation cache: `gemma-runtime serve` of a preset
(random weights, CPU) started twice on one fresh cache folder, as a pod restart or a new replica on the
operator's cache claim would be. Per start: seconds from the process's launch to /readyz, the engine's
warm-up (compiling, or loading from the cache, every step shape: ``gemma_warm_up_seconds``) and the
cache's hits and misses from /metrics. Without the cache the second start is the first one again.

usage: python -m tests.bench.compile_cache_bench [--output bench/compile_cache.json]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import gemma_runtime
from tests.bench import results
from tests.runtime.serve.helpers import free_port, wait_ready

# (preset, slots, max sequence, max prefill): the tiny test model, and bench-small (8 layers, width
# 1024, 0.25 B parameters) whose step shapes take XLA:CPU long enough for the cache to matter.
CASES = [("tiny", 4, 256, 64), ("bench-small", 4, 1024, 256)]
START_TIMEOUT_S = 900
TOKENIZER = Path(gemma_runtime.__file__).parent / "data" / "tiny_tokenizer.model"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{name} missing from /metrics")
    return float(match.group(1))


def start(case: tuple[str, int, int, int], cache: Path, log: Path) -> dict[str, float]:
    variant, slots, max_len, prefill = case
    port = free_port()
    command = [sys.executable, "-m", "gemma_runtime", "serve", "--variant", variant, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--max-batch-size", str(slots), "--max-sequence-length", str(max_len)]
    command += ["--max-prefill-length", str(prefill), "--compilation-cache", str(cache)]
    command += ["--tokenizer", str(TOKENIZER)]  # random weights: any tokenizer within the vocabulary
    url = f"http://127.0.0.1:{port}"
    launched = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=out, stderr=out
        )
        try:
            wait_ready(url, process, log.read_text, START_TIMEOUT_S)
            ready = time.monotonic() - launched
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
        finally:
            process.terminate()
            process.wait(120)
    return {
        "ready_seconds": round(ready, 2),
        "warm_up_seconds": round(_metric(metrics, "gemma_warm_up_seconds"), 2),
        "cache_hits": _metric(metrics, "gemma_compilation_cache_hits"),
        "cache_misses": _metric(metrics, "gemma_compilation_cache_misses"),
    }


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"cases": []}
    for case in CASES:
        variant, slots, max_len, prefill = case
        with tempfile.TemporaryDirectory(prefix="gemma-compile-cache-") as folder:
            cache = Path(folder) / "jax"
            first = start(case, cache, Path(folder) / "first.log")
            second = start(case, cache, Path(folder) / "second.log")
            size = sum(p.stat().st_size for p in cache.iterdir())
        figures = {
            "variant": variant,
            "slots": slots,
            "max_sequence_length": max_len,
            "max_prefill_length": prefill,
            "first": first,
            "second": second,
            "cache_bytes": size,
            "warm_up_ratio": round(second["warm_up_seconds"] / first["warm_up_seconds"], 3),
            "ready_ratio": round(second["ready_seconds"] / first["ready_seconds"], 3),
        }
        print(figures, flush=True)
        out["cases"].append(figures)
    return out


if __name__ == "__main__":
    results.main("tests.bench.compile_cache_bench", __doc__ or "", "bench/compile_cache.json", run)
