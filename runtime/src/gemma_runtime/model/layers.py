"""Building blocks: RMSNorm, the token embedder, the GeGLU feed-forward, and rotary embeddings.

Every parameter carries ``logical_axes`` metadata; gemma_runtime.parallel maps those names to mesh
axes, so the model code never names a mesh axis.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def param(
    rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], dtype: jnp.dtype, scale: float
) -> nnx.Param[Array]:
    """A normal-initialised weight with its logical axes."""
    return nnx.Param(jax.random.normal(rngs.params(), shape, dtype) * scale, logical_axes=axes)


class RMSNorm(nnx.Module):
    """x / rms(x) * (1 + scale); the scale starts at zero. Computed in f32 whatever the dtype."""

    def __init__(self, dim: int, *, eps: float, axis: str | None, param_dtype: jnp.dtype) -> None:
        self.scale = nnx.Param(jnp.zeros((dim,), param_dtype), logical_axes=(axis,))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Embedder(nnx.Module):
    """The token table, used twice: embedding (scaled by sqrt(D)) and the tied output projection."""

    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, param_dtype: jnp.dtype) -> None:
        self.input_embedding = param(rngs, (vocab, dim), ("vocab", "embed"), param_dtype, dim**-0.5)

    def encode(self, tokens: Array, dtype: jnp.dtype) -> Array:
        table = self.input_embedding[...]
        x = jnp.take(table, tokens, axis=0).astype(dtype)  # [B, T, D]
        # The factor is cast to the activation dtype first, as the reference implementations do.
        return x * jnp.asarray(math.sqrt(table.shape[1]), dtype)

    def decode(self, x: Array) -> Array:
        return jnp.einsum("BTD,VD->BTV", x, self.input_embedding[...].astype(x.dtype))


class FeedForward(nnx.Module):
    """GeGLU: gelu_tanh(x W_gate) * (x W_up), then W_down."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, param_dtype: jnp.dtype) -> None:
        self.gate = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype, dim**-0.5)
        self.up = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype, dim**-0.5)
        self.down = param(rngs, (hidden, dim), ("mlp", "embed"), param_dtype, hidden**-0.5)

    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        gate = jnp.einsum("BTD,DF->BTF", x, self.gate[...].astype(dtype))
        up = jnp.einsum("BTD,DF->BTF", x, self.up[...].astype(dtype))
        hidden = jax.nn.gelu(gate, approximate=True) * up  # [B, T, F]
        return jnp.einsum("BTF,FD->BTD", hidden, self.down[...].astype(dtype))


def apply_rope(x: Array, positions: Array, *, base: float, scale: float = 1.0) -> Array:
    """Rotary embedding, split-half convention: rotate (first half, second half) of the head dim.

    x: [B, T, N, H], positions: [B, T]. ``scale`` divides positions (linear RoPE scaling).
    """
    half = x.shape[-1] // 2
    timescale = base ** (2 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])  # [H/2]
    angles = positions[..., None].astype(jnp.float32) / scale / timescale  # [B, T, H/2]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]  # [B, T, 1, H/2]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def softcap(x: Array, cap: float | None) -> Array:
    return x if cap is None else jnp.tanh(x / cap) * cap
