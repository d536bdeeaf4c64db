"""Serving Gemma 4: the engine under the scheduler gives every request exactly the greedy tokens of decoding
it alone through the model's own cache, for each kind: dense (global layers with their own head dim and
one KV head, keys doubling as values), E-style (per-layer inputs; the last layers attend with earlier
layers' keys and values over their caches, and keep none of their own) and mixture of experts (f32,
prompts longer than the sliding window and than a chunk, pieces of several prompts packed into one step),
on one device and on a data 2 x tensor 2 mesh of simulated CPU devices (in a subprocess:
``gemma4_sharded_case.py``), where each device holds exactly the memory model's bytes; the mixture of
experts also with its experts split over an ``expert`` axis (data 2 x expert 2 x tensor 2, 8 devices).
Serving's loader places a checkpoint's tensors exactly as the loaded model's weights extract (bf16 and
int8 too)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_runtime import memory
from gemma_runtime.checkpoint import load_model, store
from gemma_runtime.model import tiny_config
from gemma_runtime.serve.engine import ModelEngine, kv_cache_bytes
from gemma_runtime.serve.layout import serving_mesh
from gemma_runtime.serve.load import load_weights
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import Request, Scheduler
from gemma_runtime.serve.weights import extract
from gemma_runtime.variants import AttentionType
from tests.runtime.serve.helpers import Collect, reference_greedy, varied_model
from tests.runtime.serve.sharded_cases import MAX_LEN as SHARDED_MAX_LEN
from tests.runtime.serve.sharded_cases import SLOTS
from tests.runtime.serve.test_load_sharded import assert_same
from tests.runtime.simulated import run_json

MAX_LEN = 64


@pytest.mark.parametrize("kind", ["dense", "e", "moe"])
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


def test_kv_shared_layers_keep_no_cache() -> None:
    config = tiny_config(4, "e")  # layers 4 and 5 reuse layers 3 and 2
    engine = ModelEngine.from_model(varied_model(config), slots=2, max_len=MAX_LEN, max_prefill=16)
    assert [layer["k"].shape[2] for layer in engine.cache] == [8, 8, MAX_LEN, 8, 0, 0]
    own = kv_cache_bytes(config, slots=1, max_len=64, itemsize=4, ring=True)
    assert own == 3 * (2 * 2 * 16 * 4 * 8) + 2 * 2 * 32 * 4 * 64  # layers 0, 1, 3 local; layer 2 global


@pytest.mark.parametrize("kind", ["dense", "e", "moe"])
@pytest.mark.parametrize(("dtype", "quantization"), [("float32", "none"), ("bfloat16", "int8")])
def test_loaded_weights_equal_the_loaded_model_extracted(
    kind: str, dtype: str, quantization: str, tmp_path: Path
) -> None:
    store.save(varied_model(tiny_config(4, kind), seed=5), tmp_path / "ours")
    mesh = serving_mesh(1, 1, jax.devices()[:1])
    config, weights = load_weights(tmp_path / "ours", dtype=dtype, quantization=quantization, mesh=mesh)
    model = load_model(tmp_path / "ours", param_dtype=jnp.dtype(dtype), dtype=jnp.dtype(dtype))
    assert config == model.config
    assert_same(weights, extract(model, quantization))


def test_a_sharded_engine_serves_the_single_device_tokens() -> None:
    results = run_json(["-m", "tests.runtime.serve.gemma4_sharded_case"], timeout=900)
    assert sorted(results) == ["dense", "e", "moe", "moe-expert"]
    for case, found in results.items():
        assert found["tokens"] == found["reference"], case
        # The memory model counts, to the byte, what each device of the data 2 x tensor 2 mesh holds (and of
        # data 2 x expert 2 x tensor 2: the experts split over expert as well).
        kind, expert = case.removesuffix("-expert"), 2 if case.endswith("-expert") else 1
        config = tiny_config(4, kind)
        for quantization, key in (("none", "weight_bytes"), ("int8", "int8_weight_bytes")):
            expected = memory.weight_bytes_per_chip(config, "float32", quantization, 2, expert)
            assert found[key] == expected, (case, quantization)
        slots_per_device = SLOTS // 2
        cache = slots_per_device * memory.kv_bytes_per_slot(config, SHARDED_MAX_LEN, "float32", 2)
        assert found["cache_bytes"] == cache, case
    # Expert parallelism: each device holds 2 of the 4 experts, each expert's hidden axis (32) over tensor,
    # and serves the single-device tokens under int8 too.
    parallel = results["moe-expert"]
    assert (parallel["experts_spec"], parallel["experts_shard"]) == (
        "P('expert', None, 'tensor')",
        [2, 64, 16],
    )
    assert parallel["int8_tokens"] == parallel["int8_reference"]
    assert parallel["weight_bytes"] < results["moe"]["weight_bytes"]
