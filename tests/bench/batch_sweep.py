"""Decode throughput against batch size (serving, `bench-small` f32 on CPU): for each batch size B, B
requests with 64-token prompts decode 32 tokens each in one engine with B slots; tokens/s counts the
tokens after each request's first (prefill excluded). Beside it, the two rooflines of the same run: the
read bandwidth over the weight bytes per step (times B) and the compute peak over the FLOPs per token.

usage: python -m tests.bench.batch_sweep [--output bench/sweep.json]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.bench import results
from tests.bench.serve_bench import Timing, measure_peak

SIZES = (1, 2, 4, 8, 16, 32)
PROMPT, TOKENS = 64, 32


def decode_rate(engine: Any, batch: int, vocab: int) -> float:
    from gemma_runtime.serve.scheduler import Request, Scheduler

    scheduler = Scheduler(engine, max_queued=batch)
    rng = np.random.RandomState(batch)
    sinks = [Timing() for _ in range(batch)]
    for sink in sinks:
        scheduler.submit(Request(rng.randint(3, vocab, size=PROMPT).tolist(), TOKENS, sink))
    while not all(s.reason for s in sinks):
        scheduler.step()
    start = max(s.times[0] for s in sinks)  # every request decoding from here on
    end = max(s.times[-1] for s in sinks)
    decoded = sum(sum(1 for t in s.times if t > start) for s in sinks)
    return decoded / (end - start)


def run(log: Any = print) -> dict[str, Any]:
    from flax import nnx

    from gemma_runtime.model import Transformer, preset
    from gemma_runtime.serve.engine import ModelEngine
    from gemma_runtime.serve.weights import extract, weight_bytes

    config = preset("bench-small")
    model = Transformer(config, rngs=nnx.Rngs(0))
    machine = measure_peak()
    weights = weight_bytes(extract(model))
    rows = []
    for batch in SIZES:
        engine = ModelEngine.from_model(model, slots=batch, max_len=PROMPT + TOKENS, max_prefill=PROMPT)
        engine.warm_up()
        rate = decode_rate(engine, batch, config.vocab_size)
        rows.append({"batch": batch, "tokens_per_second": rate})
        log(f"[sweep] batch {batch}: {rate:.1f} tokens/s")
    return {
        "model": config.name,
        "prompt": PROMPT,
        "tokens": TOKENS,
        "machine": machine,
        "weight_bytes": weights,
        "flops_per_token": config.matmul_flops_per_token(),
        "rows": rows,
    }


if __name__ == "__main__":
    results.main("tests.bench.batch_sweep", __doc__, "bench/sweep.json", run)
