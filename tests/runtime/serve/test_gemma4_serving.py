"""Serving Gemma 4: the engine under the scheduler gives every request exactly the greedy tokens of
decoding it alone through the model's own cache, for the dense kind (global layers with their own head
dim and one KV head, keys doubling as values) and the mixture-of-experts kind (f32, prompts longer than
the sliding window and than a chunk, pieces of several prompts packed into one step). The E models'
per-layer inputs and KV sharing are not served yet: the engine refuses them by name."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_runtime.model import tiny_config
from gemma_runtime.serve.engine import ModelEngine, kv_cache_bytes
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import Request, Scheduler
from gemma_runtime.variants import AttentionType
from tests.runtime.serve.helpers import Collect, reference_greedy, varied_model

MAX_LEN = 64


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_continuous_batching_is_token_exact(kind: str) -> None:
    model = varied_model(tiny_config(4, kind), seed=4)
    engine = ModelEngine.from_model(model, slots=3, max_len=MAX_LEN, max_prefill=16, max_segments=3)
    scheduler = Scheduler(engine, max_queued=100)
    rng = np.random.RandomState(4)
    requests = [
        (rng.randint(4, 256, size=rng.randint(1, 30)).tolist(), int(rng.randint(1, 14))) for _ in range(6)
    ]
    sinks = []
    for prompt, max_tokens in requests:
        sinks.append(Collect())
        scheduler.submit(Request(prompt, max_tokens, sinks[-1], SamplingParams(temperature=0)))
    for _ in range(400):
        scheduler.step()
        if all(s.reason for s in sinks):
            break
    for (prompt, max_tokens), sink in zip(requests, sinks, strict=True):
        assert sink.reason == "length"
        assert sink.tokens == reference_greedy(model, prompt, max_tokens, MAX_LEN), prompt


def test_kv_cache_bytes_count_each_layer_types_shape() -> None:
    config = tiny_config(4, "dense")  # local: 2 KV heads x 16; global: 1 x 32; window 8; 4 local, 2 global
    local = 2 * 2 * 16 * 4 * 8
    global_ = 2 * 1 * 32 * 4 * 64
    assert config.attention_types.count(AttentionType.LOCAL) == 4
    assert kv_cache_bytes(config, slots=1, max_len=64, itemsize=4, ring=True) == 4 * local + 2 * global_


def test_the_e_models_are_refused_by_name() -> None:
    model = varied_model(tiny_config(4, "e"))
    with pytest.raises(ValueError, match="per-layer inputs or KV-shared layers"):
        ModelEngine.from_model(model, slots=2, max_len=MAX_LEN, max_prefill=16)
