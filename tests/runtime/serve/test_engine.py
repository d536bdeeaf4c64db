"""The JAX engine under the scheduler: with requests arriving at random times, continuous batching with
chunked prefill (pieces of several prompts packed into one step) gives every request exactly the greedy
tokens of decoding it alone (f32, a tiny model of each generation, prompts longer than the sliding window
and than a chunk); steady state never recompiles; and rings on local layers shrink the KV cache by the
reported amount."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_runtime.model import PRESETS, tiny_config
from gemma_runtime.serve.engine import ModelEngine, buckets, kv_cache_bytes
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import Request, Scheduler
from tests.runtime.serve.helpers import Collect, reference_greedy, varied_model

MAX_LEN = 64


def _compiled(engine: ModelEngine) -> int:
    """How many shapes the engine's step has been compiled for."""
    return int(engine._step._cache_size())


@pytest.mark.parametrize("segments", [1, 3])
@pytest.mark.parametrize("generation", [1, 2, 3])
def test_continuous_batching_is_token_exact(generation: int, segments: int) -> None:
    model = varied_model(tiny_config(generation), seed=generation)
    engine = ModelEngine.from_model(model, slots=3, max_len=MAX_LEN, max_prefill=16, max_segments=segments)
    scheduler = Scheduler(engine, max_queued=100)
    rng = np.random.RandomState(generation)
    requests = []
    for n in range(7):
        prompt = rng.randint(4, 256, size=rng.randint(1, 30)).tolist()  # up to 2 chunks, past the window
        arrival = 0 if n < 3 else int(rng.randint(0, 25))  # three at once: their prompts share steps
        requests.append((arrival, prompt, int(rng.randint(1, 14))))
    sinks: list[Collect] = []
    step = 0
    while step < 400:
        for arrival, prompt, max_tokens in requests:
            if arrival == step:
                sink = Collect()
                sinks.append(sink)
                scheduler.submit(Request(prompt, max_tokens, sink, SamplingParams(temperature=0)))
        scheduler.step()
        step += 1
        if len(sinks) == len(requests) and all(s.reason for s in sinks):
            break
    by_arrival = sorted(requests, key=lambda r: r[0])  # sinks were made in arrival order
    for (_, prompt, max_tokens), sink in zip(by_arrival, sinks, strict=True):
        assert sink.reason == "length"
        assert sink.tokens == reference_greedy(model, prompt, max_tokens, MAX_LEN), prompt


def test_steady_state_does_not_recompile() -> None:
    engine = ModelEngine.from_model(varied_model(tiny_config(2)), slots=2, max_len=MAX_LEN, max_prefill=32)
    engine.warm_up()
    compiled = _compiled(engine)
    assert compiled == 1 + len(buckets(32))
    scheduler = Scheduler(engine, max_queued=10)
    sinks = [Collect() for _ in range(4)]
    for n, sink in enumerate(sinks):
        scheduler.submit(Request(list(range(3, 3 + 7 * n + 1)), 5, sink))
    while not all(s.reason for s in sinks):
        scheduler.step()
    assert _compiled(engine) == compiled


def test_chunk_buckets() -> None:
    assert buckets(16) == (16,)
    assert buckets(100) == (16, 32, 64, 100)
    assert buckets(1024)[-2:] == (512, 1024)


@pytest.mark.parametrize(("name", "saved"), [("gemma-2b", 0.0), ("gemma2-9b", 0.25), ("gemma3-12b", 0.7)])
def test_rings_on_local_layers_shrink_the_kv_cache(name: str, saved: float) -> None:
    config = PRESETS[name]
    ring = kv_cache_bytes(config, slots=32, max_len=32_768, itemsize=2, ring=True)
    full = kv_cache_bytes(config, slots=32, max_len=32_768, itemsize=2, ring=False)
    fraction = 1 - ring / full
    print(
        f"{name}: KV cache at 32 x 32768 bf16: {ring / 2**30:.1f} GiB with rings, "
        f"{full / 2**30:.1f} GiB without ({fraction:.0%} saved)"
    )
    assert fraction >= saved
