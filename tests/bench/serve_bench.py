"""Serving benchmark: our engine against Hugging Face transformers ``generate`` on the same weights
(``bench-small``, f32, CPU), in one run on one machine. Reported, never asserted.

(a) offline throughput on a mixed workload (seeded prompt lengths 16-512, output lengths 16-256, 128
    requests, max batch 32): useful (requested) tokens/s for both, and ours against the compute roofline
    (useful FLOPs / the measured peak of a large matrix product);
(b) batch-1 decode tokens/s against the memory-bandwidth roofline (weight bytes per token / the
    bandwidth of a large matrix-vector product), f32 and int8, and HF's f32 batch-1 rate;
(c) time to first token and time per output token, p50 and p99, at three request rates.

usage: python -m tests.bench.serve_bench [--quick] [--output bench/serve.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench import results
from tests.runtime.reference.hf import REQUIREMENTS, SMOKE_TEST
from tests.runtime.reference.venvs import ensure_venv, run_worker

HERE = Path(__file__).parent


@dataclasses.dataclass(frozen=True)
class Plan:
    requests: int
    prompt_lengths: tuple[int, int]
    output_lengths: tuple[int, int]
    batch: int
    max_prefill: int
    decode_prompt: int
    decode_tokens: int
    rate_requests: int
    rate_fractions: tuple[float, ...]


FULL = Plan(128, (16, 512), (16, 256), 32, 128, 64, 128, 32, (0.25, 0.5, 0.9))
QUICK = Plan(16, (16, 128), (16, 64), 8, 64, 32, 24, 6, (0.25, 0.5, 0.9))


def workload(plan: Plan, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.RandomState(seed)
    items = []
    for _ in range(plan.requests):
        length = int(rng.randint(plan.prompt_lengths[0], plan.prompt_lengths[1] + 1))
        prompt = rng.randint(3, vocab, size=length).tolist()
        items.append(
            {
                "prompt": prompt,
                "max_tokens": int(rng.randint(plan.output_lengths[0], plan.output_lengths[1] + 1)),
            }
        )
    return items


def hf_config(config: Any) -> dict[str, Any]:
    """transformers.GemmaConfig arguments for a Gemma 1 TransformerConfig."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "hidden_activation": "gelu_pytorch_tanh",
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
    }


def measure_peak() -> dict[str, float]:
    """GFLOP/s of a 2048^3 f32 matrix product (jax) and GB/s of a 1 GiB matrix-vector product (numpy)."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.RandomState(0).rand(2048, 2048).astype(np.float32))
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - started)
    matrix = np.random.RandomState(0).rand(16_384, 16_384).astype(np.float32)  # 1 GiB
    vector = np.ones(16_384, np.float32)
    read = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        matrix @ vector
        read = min(read, time.perf_counter() - started)
    return {"peak_gflops": 2 * 2048**3 / best / 1e9, "bandwidth_gbps": matrix.nbytes / read / 1e9}


class Timing:
    """A scheduler sink recording when each token arrived."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.reason: str | None = None
        self.done = threading.Event()

    def token(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
        self.times.append(time.monotonic())
        return False

    def finish(self, reason: str) -> None:
        self.reason = reason
        self.done.set()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def useful_flops(config: Any, items: list[dict[str, Any]]) -> float:
    """Matrix-product FLOPs of every prompt and requested token, plus attention over its context."""
    per_token = config.matmul_flops_per_token()
    attention = (
        4 * config.num_layers * config.num_heads * config.head_dim
    )  # QK^T and PV, per context position
    total = 0.0
    for item in items:
        n = len(item["prompt"]) + item["max_tokens"]
        total += n * per_token + attention * n * (n + 1) / 2
    return total


def offline(engine: Any, items: list[dict[str, Any]]) -> dict[str, float]:
    from gemma_runtime.serve.scheduler import Request, Scheduler

    scheduler = Scheduler(engine, max_queued=len(items))
    sinks = [Timing() for _ in items]
    started = time.monotonic()
    for item, sink in zip(items, sinks, strict=True):
        scheduler.submit(Request(item["prompt"], item["max_tokens"], sink))
    while not all(s.reason for s in sinks):
        scheduler.step()
    seconds = time.monotonic() - started
    useful = sum(item["max_tokens"] for item in items)
    assert all(len(s.times) == item["max_tokens"] for s, item in zip(sinks, items, strict=True))
    return {"seconds": seconds, "useful_tokens": useful, "useful_tokens_per_second": useful / seconds}


def batch1_decode(engine: Any, prompt_length: int, tokens: int, vocab: int) -> float:
    from gemma_runtime.serve.scheduler import Request, Scheduler

    scheduler = Scheduler(engine, max_queued=1)
    prompt = np.random.RandomState(1).randint(3, vocab, size=prompt_length).tolist()
    sink = Timing()
    scheduler.submit(Request(prompt, tokens, sink))
    while sink.reason is None:
        scheduler.step()
    return (tokens - 1) / (sink.times[-1] - sink.times[0])


def at_rate(engine: Any, items: list[dict[str, Any]], rate: float, seed: int) -> dict[str, float]:
    """Poisson arrivals at ``rate`` requests/s against the scheduler's own thread."""
    from gemma_runtime.serve.scheduler import Request, Scheduler

    scheduler = Scheduler(engine, max_queued=len(items))
    loop = threading.Thread(target=scheduler.run)
    loop.start()
    gaps = np.random.RandomState(seed).exponential(1 / rate, size=len(items))
    requests = []
    try:
        for gap, item in zip(gaps, items, strict=True):
            time.sleep(float(gap))
            sink = Timing()
            request = Request(item["prompt"], item["max_tokens"], sink)
            scheduler.submit(request)
            requests.append((request, sink))
        for _, sink in requests:
            sink.done.wait(3600)
    finally:
        scheduler.stop()
        loop.join()
    ttft = [s.times[0] - r.arrived for r, s in requests]
    tpot = [(s.times[-1] - s.times[0]) / (len(s.times) - 1) for _, s in requests if len(s.times) > 1]
    return {
        "rate_rps": rate,
        "ttft_p50_s": _percentile(ttft, 50),
        "ttft_p99_s": _percentile(ttft, 99),
        "tpot_p50_s": _percentile(tpot, 50),
        "tpot_p99_s": _percentile(tpot, 99),
    }


def run(plan: Plan, workdir: Path, log: Any = print) -> dict[str, Any]:
    from gemma_runtime.checkpoint import load_model
    from gemma_runtime.model import preset
    from gemma_runtime.serve.engine import ModelEngine
    from gemma_runtime.serve.weights import extract, weight_bytes

    config = preset("bench-small")
    items = workload(plan, config.vocab_size)
    max_len = plan.prompt_lengths[1] + plan.output_lengths[1]
    log(f"[bench] Hugging Face generate ({'quick' if plan is QUICK else 'full'} plan)")
    save_dir = workdir / "weights"
    request = {
        "config": hf_config(config),
        "seed": 0,
        "save_dir": str(save_dir),
        "batch_size": plan.batch,
        "workload": items,
        "decode": {"prompt_length": plan.decode_prompt, "new_tokens": plan.decode_tokens},
    }
    python = ensure_venv("hf", REQUIREMENTS, SMOKE_TEST, log)
    hf = run_worker(python, HERE / "hf_serve_worker.py", request, workdir, timeout=4 * 3600)
    hf_useful = sum(item["max_tokens"] for item in items) / float(hf["mixed_seconds"])
    hf_decode = float(hf["decode_tokens_per_second"])
    log(f"[bench] HF: {hf_useful:.1f} useful tokens/s, batch-1 decode {hf_decode:.1f} tokens/s")

    machine = measure_peak()
    model = load_model(save_dir)
    peak, bandwidth = machine["peak_gflops"], machine["bandwidth_gbps"]
    log(f"[bench] peak {peak:.0f} GFLOP/s, read bandwidth {bandwidth:.1f} GB/s")

    engine = ModelEngine.from_model(model, slots=plan.batch, max_len=max_len, max_prefill=plan.max_prefill)
    compile_seconds = engine.warm_up()
    ours = offline(engine, items)
    roofline_seconds = useful_flops(config, items) / (machine["peak_gflops"] * 1e9)
    ours["roofline_fraction"] = roofline_seconds / ours["seconds"]
    rate, fraction = ours["useful_tokens_per_second"], ours["roofline_fraction"]
    log(f"[bench] ours: {rate:.1f} useful tokens/s ({fraction:.0%} of the compute roofline)")

    capacity = plan.requests / ours["seconds"]
    rates = []
    for n, fraction in enumerate(plan.rate_fractions):
        subset = items[: plan.rate_requests]
        rates.append(at_rate(engine, subset, capacity * fraction, seed=n))
        log(f"[bench] at {rates[-1]['rate_rps']:.3f} req/s: {rates[-1]}")
    del engine

    decode = {}
    for quantization in ("none", "int8"):
        single = ModelEngine.from_model(
            model,
            slots=1,
            max_len=plan.decode_prompt + plan.decode_tokens,
            max_prefill=plan.decode_prompt,
            quantization=quantization,
        )
        single.warm_up()
        rate = batch1_decode(single, plan.decode_prompt, plan.decode_tokens, config.vocab_size)
        bytes_per_token = weight_bytes(extract(model, quantization))
        roofline = machine["bandwidth_gbps"] * 1e9 / bytes_per_token
        decode[quantization] = {
            "tokens_per_second": rate,
            "weight_bytes_per_token": bytes_per_token,
            "roofline_tokens_per_second": roofline,
            "roofline_fraction": rate / roofline,
        }
        log(f"[bench] batch-1 decode {quantization}: {rate:.1f} tokens/s ({rate / roofline:.0%} of roofline)")

    return {
        "plan": dataclasses.asdict(plan),
        "model": config.name,
        "machine": {**machine, "cpus": os.cpu_count()},
        "versions": {"torch": str(hf["versions"][0]), "transformers": str(hf["versions"][1])},
        "offline": {
            "ours": {**ours, "compile_seconds": compile_seconds},
            "hf": {
                "seconds": float(hf["mixed_seconds"]),
                "generated_tokens": int(hf["mixed_generated_tokens"]),
                "useful_tokens_per_second": hf_useful,
            },
            "speedup": ours["useful_tokens_per_second"] / hf_useful,
        },
        "batch1_decode": {
            **decode,
            "hf_f32_tokens_per_second": hf_decode,
            "int8_over_hf_f32": decode["int8"]["tokens_per_second"] / hf_decode,
        },
        "latency_at_rates": rates,
        "statistics_note": "one run on a shared machine; treat figures as +-15 %",
        "median_ttft_s": statistics.median(r["ttft_p50_s"] for r in rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.serve_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small version (minutes, not an hour)")
    parser.add_argument("--output", type=Path, default=Path("bench/serve.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        report = run(QUICK if args.quick else FULL, Path(tmp))
    report["quick"] = args.quick
    results.write(report, args.output)


if __name__ == "__main__":
    main()
