"""Splash attention (training's attention on TPUs) attends as the XLA attention does: run by Pallas's
interpreter on the CPU against ``attention.attend_batch`` on tiny shapes, forward and gradients, for every
kind of attention the Gemma 1-3 presets have (causal, sliding window, soft-capped logits, grouped and
multi-query heads, packed rows with padding), on one device and split over a mesh of 8 CPU devices; the
kernel is chosen only for a TPU mesh and a sequence a tile divides."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_runtime.model import attention, splash
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.variants import AttentionType, TransformerConfig, tiny_config
from tests.runtime.simulated import run_json

T = 384  # three 128-token tiles: whole, partial and empty blocks of the mask


def _rows(batch: int, length: int) -> tuple[jax.Array, jax.Array]:
    """Packed rows (segment ids from 1, 0 for padding; positions from 0 in each segment)."""
    segments = np.ones((batch, length), np.int32)
    segments[0, 150:] = 2
    segments[0, 300:] = 3
    if batch > 1:
        segments[1, 250:] = 0  # padding
    positions = np.zeros_like(segments)
    for b in range(batch):
        for t in range(1, length):
            same = segments[b, t] == segments[b, t - 1]
            positions[b, t] = positions[b, t - 1] + 1 if same else 0
    return jnp.asarray(segments), jnp.asarray(positions)


def _qkv(config: TransformerConfig, batch: int, length: int) -> tuple[jax.Array, ...]:
    keys = jax.random.split(jax.random.key(0), 4)
    n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
    q = jax.random.normal(keys[0], (batch, length, n, h)) * config.query_scale
    kk = jax.random.normal(keys[1], (batch, length, k, h))
    v = jax.random.normal(keys[2], (batch, length, k, h))
    cotangent = jax.random.normal(keys[3], (batch, length, n, h))
    return q, kk, v, cotangent


CASES = {
    "gemma1 causal, multi-head": (tiny_config(1, num_kv_heads=4), AttentionType.GLOBAL),
    "gemma1 multi-query": (tiny_config(1, num_kv_heads=1), AttentionType.GLOBAL),
    "gemma2 global, soft-capped, grouped": (
        tiny_config(2).replace(attn_logit_softcap=5.0),
        AttentionType.GLOBAL,
    ),
    "gemma2 sliding window, soft-capped": (
        tiny_config(2, sliding_window=100).replace(attn_logit_softcap=5.0),
        AttentionType.LOCAL,
    ),
    "gemma3 sliding window, grouped": (tiny_config(3, sliding_window=130), AttentionType.LOCAL),
}


@pytest.mark.parametrize("case", list(CASES))
def test_splash_attends_as_the_xla_attention_does(case: str) -> None:
    config, attn_type = CASES[case]
    segments, positions = _rows(2, T)
    q, k, v, cotangent = _qkv(config, 2, T)
    real = (segments != 0)[:, :, None, None]  # padding's output is no real token's business

    def xla(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out, _ = attention.attend_batch(
            config, attn_type, q, k, v, positions=positions, segment_ids=segments, cache=None
        )
        return out

    def kernel(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return splash.attend(config, attn_type, q, k, v, segment_ids=segments, mesh=None, interpret=True)

    def loss(fn: Any) -> Any:
        return lambda q, k, v: jnp.sum(jnp.where(real, fn(q, k, v) * cotangent, 0.0))

    np.testing.assert_allclose(
        jnp.where(real, kernel(q, k, v), 0.0), jnp.where(real, xla(q, k, v), 0.0), atol=2e-6, rtol=1e-5
    )
    got = jax.grad(loss(kernel), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=f"d{name}")


def test_the_window_and_the_soft_cap_change_what_is_compared() -> None:
    """The cases above can fail: a window or cap the kernel did not apply gives other values."""
    config, attn_type = CASES["gemma2 sliding window, soft-capped"]
    segments, _ = _rows(1, T)
    q, k, v, _ = _qkv(config, 1, T)
    base = splash.attend(config, attn_type, q, k, v, segment_ids=segments, mesh=None, interpret=True)
    for other in (config.replace(sliding_window=300), config.replace(attn_logit_softcap=None)):
        changed = splash.attend(other, attn_type, q, k, v, segment_ids=segments, mesh=None, interpret=True)
        assert float(jnp.max(jnp.abs(changed - base))) > 1e-3


def test_the_kernel_is_chosen_only_for_a_tpu_mesh_and_a_sequence_a_tile_divides() -> None:
    assert splash.block_size(8192) == 512
    assert splash.block_size(384) == 128
    assert splash.block_size(100) is None
    assert "100 tokens take the XLA attention" in (splash.unsupported(100) or "")
    mesh = make_mesh(1, 1, 1, jax.devices()[:1])
    assert not splash.on_tpu(mesh.abstract_mesh)  # CPU: the XLA attention
    assert not splash.on_tpu(None)
    config, attn_type = CASES["gemma1 causal, multi-head"]
    q, k, v, _ = _qkv(config, 1, 128)
    positions = jnp.arange(128)[None]

    def auto(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            out, _ = attention.attend_batch(
                config, attn_type, q, k, v, positions=positions, segment_ids=None, cache=None, kernel="auto"
            )
        return out

    assert "custom_call" not in jax.jit(auto).lower(q, k, v).as_text()


_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from gemma_runtime.model import attention, splash
    from gemma_runtime.parallel.mesh import make_mesh
    from gemma_runtime.variants import AttentionType, tiny_config
    from tests.runtime.test_splash import _qkv, _rows

    out = {}
    for shape, kv_heads in json.loads(sys.argv[1]):
        config = tiny_config(2, num_kv_heads=kv_heads, sliding_window=100)
        mesh = make_mesh(*shape)
        segments, positions = _rows(8, 256)
        q, k, v, _ = _qkv(config, 8, 256)
        real = (segments != 0)[:, :, None, None]
        want, _ = attention.attend_batch(
            config, AttentionType.LOCAL, q, k, v, positions=positions, segment_ids=segments, cache=None
        )

        @jax.jit
        def sharded(q, k, v, segments):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return splash.attend(
                    config,
                    AttentionType.LOCAL,
                    q,
                    k,
                    v,
                    segment_ids=segments,
                    mesh=mesh.abstract_mesh,
                    interpret=True,
                )

        rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        got = sharded(*(jax.device_put(x, rows) for x in (q, k, v, segments)))
        diff = float(jnp.max(jnp.abs(jnp.where(real, got - want, 0.0))))
        out[str((shape, kv_heads))] = {"diff": diff, "devices": len(got.sharding.device_set)}
    print(json.dumps(out))
    """
)


def test_splash_split_over_a_mesh_of_8_cpu_devices_attends_as_on_one() -> None:
    """Batch over data and fsdp, heads over tensor: on the KV heads where they divide, else on the query
    heads of each KV head (multi-query)."""
    cases = [[[2, 2, 2], 2], [[1, 2, 4], 1], [[4, 2, 1], 2]]
    results = run_json(["-c", _SHARDED, json.dumps(cases)])
    assert len(results) == len(cases)
    for case, result in results.items():
        assert result["diff"] < 2e-6, (case, result)
        assert result["devices"] == 8, (case, result)
