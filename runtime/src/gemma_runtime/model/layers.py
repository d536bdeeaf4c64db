"""The NNX modules of the building blocks: RMSNorm, the token embedder and the GeGLU feed-forward. Each
holds its parameters and calls the pure functions of ``block.py`` for its math.

Every parameter carries ``logical_axes`` metadata; gemma_runtime.parallel maps those names to mesh
axes, so the model code never names a mesh axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gemma_runtime.model.block import embed, feed_forward, rms_norm

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
        return rms_norm(x, self.scale[...], self.eps)


class Embedder(nnx.Module):
    """The token table, used twice: embedding (scaled by sqrt(D)) and the tied output projection
    (``block.logits``)."""

    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, param_dtype: jnp.dtype) -> None:
        self.input_embedding = param(rngs, (vocab, dim), ("vocab", "embed"), param_dtype, dim**-0.5)

    def encode(self, tokens: Array, dtype: jnp.dtype) -> Array:
        return embed(self.input_embedding[...], tokens, dtype)  # [B, T, D]


class FeedForward(nnx.Module):
    """GeGLU: gelu_tanh(x W_gate) * (x W_up), then W_down."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, param_dtype: jnp.dtype) -> None:
        self.gate = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype, dim**-0.5)
        self.up = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype, dim**-0.5)
        self.down = param(rngs, (hidden, dim), ("mlp", "embed"), param_dtype, hidden**-0.5)

    def weights(self) -> dict[str, Array]:
        return {"gate": self.gate[...], "up": self.up[...], "down": self.down[...]}

    def __call__(self, x: Array) -> Array:
        return feed_forward(self.weights(), x)
