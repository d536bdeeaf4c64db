"""The model family on CPU: prefill-then-decode through the cache (rings for local layers) equals the
full forward pass for every generation; packed sequences do not see each other; bf16 tracks f32; and
every preset's parameter count matches the published size (built with eval_shape, no memory)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gemma_runtime.model import PRESETS, Transformer, tiny_config

CONFIGS = {
    "gemma1-mqa": tiny_config(1, num_kv_heads=1),
    "gemma1-mha": tiny_config(1, num_kv_heads=4),
    "gemma2": tiny_config(2),
    "gemma3": tiny_config(3),
}


def _tokens(batch: int, length: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.RandomState(seed).randint(1, 256, size=(batch, length)))


def _positions(batch: int, start: int, length: int) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(start, start + length), (batch, length))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("prefill", [1, 5, 12])  # 12 > the sliding window of 8: the ring wraps in one chunk
def test_prefill_then_decode_equals_the_full_forward(name: str, prefill: int) -> None:
    config = CONFIGS[name]
    model = Transformer(config, rngs=nnx.Rngs(0))
    tokens = _tokens(2, 24)
    full, _ = model(tokens)
    cache = model.init_cache(batch=2, max_len=32)
    logits, cache = model(tokens[:, :prefill], _positions(2, 0, prefill), cache=cache)
    steps = [logits]
    for t in range(prefill, 24):
        logits, cache = model(tokens[:, t : t + 1], _positions(2, t, 1), cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(
        np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full), rtol=1e-4, atol=1e-4
    )


def test_local_layers_keep_only_a_window_of_cache() -> None:
    model = Transformer(CONFIGS["gemma3"], rngs=nnx.Rngs(0))
    cache = model.init_cache(batch=1, max_len=512)
    sizes = [layer["k"].shape[1] for layer in cache]
    assert sizes == [8, 8, 8, 8]  # four local layers: the 5:1 pattern starts with local ones
    model2 = Transformer(CONFIGS["gemma2"], rngs=nnx.Rngs(0))
    assert [layer["k"].shape[1] for layer in model2.init_cache(1, 512)] == [8, 512, 8, 512]


def test_packed_sequences_do_not_attend_across_segments() -> None:
    model = Transformer(CONFIGS["gemma2"], rngs=nnx.Rngs(0))
    a, b = _tokens(1, 7, seed=1), _tokens(1, 9, seed=2)
    alone_a, _ = model(a)
    alone_b, _ = model(b)
    packed = jnp.concatenate([a, b], axis=1)
    positions = jnp.concatenate([_positions(1, 0, 7), _positions(1, 0, 9)], axis=1)
    segments = jnp.asarray([[1] * 7 + [2] * 9])
    logits, _ = model(packed, positions, segment_ids=segments)
    np.testing.assert_allclose(np.asarray(logits[:, :7]), np.asarray(alone_a), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logits[:, 7:]), np.asarray(alone_b), rtol=1e-4, atol=1e-4)


def test_bf16_compute_tracks_f32() -> None:
    tokens = _tokens(2, 16)
    f32 = Transformer(CONFIGS["gemma3"], rngs=nnx.Rngs(0))
    bf16 = Transformer(CONFIGS["gemma3"], rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    a, _ = f32(tokens)
    b, _ = bf16(tokens)
    assert b.dtype == jnp.float32  # logits come out in f32 for the loss and sampling
    assert float(jnp.max(jnp.abs(a - b))) < 0.1 * float(jnp.max(jnp.abs(a)))


# Published sizes. Gemma 3's technical report gives embedding + non-embedding parameters of the text
# tower (its totals add a 417 M vision encoder that a text model does not have).
PUBLISHED = {
    "gemma-2b": 2.506e9,
    "gemma-7b": 8.538e9,
    "gemma2-2b": 2.61e9,
    "gemma2-9b": 9.242e9,
    "gemma2-27b": 27.2e9,
    "gemma3-1b": (302 + 698) * 1e6,
    "gemma3-4b": (675 + 3209) * 1e6,
    "gemma3-12b": (1012 + 10759) * 1e6,
    "gemma3-27b": (1416 + 25600) * 1e6,
    "bench-small": 253e6,
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_parameter_counts_match_the_published_sizes(name: str) -> None:
    config = PRESETS[name]
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(abstract, nnx.Param)))
    assert count == config.param_count()
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.005, f"{name}: {count / 1e9:.4f} B"
