"""int8 weights: per-channel quantization round-trips within half a step, the engine's forward equals
the model's own forward in full precision, and the int8 quality loss (logit error, greedy agreement)
against f32 on the same weights is small and reported."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gemma_runtime.model import Transformer, matmul, preset, tiny_config
from gemma_runtime.model.matmul import Int8, project
from gemma_runtime.serve.quality import measure_int8, sequence_logits
from gemma_runtime.serve.weights import extract, quantize
from tests.runtime.serve.helpers import varied_model


def test_per_channel_round_trip_is_within_half_a_step() -> None:
    weight = jnp.asarray(np.random.RandomState(0).normal(size=(4, 16, 8)).astype(np.float32))
    q = quantize(weight, (1,))
    assert q.values.dtype == jnp.int8
    assert q.scale.shape == (4, 8)
    restored = np.asarray(q.values, np.float32) * np.asarray(q.scale)[:, None, :]
    step = np.asarray(q.scale)[:, None, :]
    assert np.all(np.abs(restored - np.asarray(weight)) <= step / 2 + 1e-7)


@pytest.mark.parametrize("row_shards", [1, 4])
@pytest.mark.parametrize(("spec", "shape"), [("BTD,DF->BTF", (60, 24)), ("BTD,VD->BTV", (24, 60))])
def test_int8_product_converted_in_blocks_equals_the_whole_product(
    spec: str, shape: tuple[int, int], row_shards: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU an int8 weight is converted a block of rows at a time (over the contracted axis or the
    output axis), blocks within each tensor shard of the rows; the result is the product with the whole
    converted weight."""
    rng = np.random.RandomState(2)
    values = jnp.asarray(rng.randint(-127, 128, size=shape).astype(np.int8))
    contracted, out = shape if spec.startswith("BTD,D") else shape[::-1]
    scale = jnp.asarray(rng.uniform(0.01, 0.1, size=out).astype(np.float32))
    x = jnp.asarray(rng.normal(size=(1, 3, contracted)).astype(np.float32))
    whole = jnp.einsum(spec, x, values.astype(jnp.float32)) * scale
    monkeypatch.setattr(matmul, "_BLOCK_VALUES", 7 * 24)  # at most 7 rows of 24 or 2 rows of 60 a block
    blocks = matmul._row_blocks(values)
    assert blocks == (10 if shape[0] == 60 else 12)
    blocked = project(x, Int8(values, scale), spec, row_shards)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(whole), rtol=1e-5, atol=1e-3)


def test_engine_forward_equals_the_model() -> None:
    model = varied_model(tiny_config(2))
    tokens = np.random.RandomState(1).randint(0, 256, size=20)
    ours = np.asarray(sequence_logits(model.config, extract(model), tokens, jnp.float32))
    theirs, _ = model(jnp.asarray(tokens)[None])
    np.testing.assert_allclose(ours, np.asarray(theirs[0]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norms", ["initial", "varied"])
def test_int8_quality_on_the_tiny_preset(norms: str) -> None:
    """Random weights at their initial scales, and with random norm scales (which amplify the error)."""
    config = preset("tiny")
    model = varied_model(config, seed=3) if norms == "varied" else Transformer(config, rngs=nnx.Rngs(3))
    rng = np.random.RandomState(0)
    sequences = [rng.randint(4, 1024, size=96) for _ in range(4)]
    report = measure_int8(model, sequences)
    print(f"int8 vs f32 on tiny ({norms} norms): {report.as_dict()}")
    assert report.relative_logit_error < 0.1
    assert report.top1_agreement > 0.85
    assert report.weight_bytes_ratio < 0.3
