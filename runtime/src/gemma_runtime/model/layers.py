"""The NNX modules of the building blocks: RMSNorm, the token embedder, the GeGLU feed-forward and
Gemma 4's mixture of experts. Each
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
    """x / rms(x) * (1 + scale), the scale starting at zero; or (``plus_one=False``, Gemma 4)
    x / rms(x) * scale, the scale starting at one. Computed in f32 whatever the dtype."""

    def __init__(
        self, dim: int, *, eps: float, axis: str | None, param_dtype: jnp.dtype, plus_one: bool = True
    ) -> None:
        init = jnp.zeros if plus_one else jnp.ones
        self.scale = nnx.Param(init((dim,), param_dtype), logical_axes=(axis,))
        self.eps = eps
        self.plus_one = plus_one

    def __call__(self, x: Array) -> Array:
        return rms_norm(x, self.scale[...], self.eps, self.plus_one)


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


class MixtureOfExperts(nnx.Module):
    """Gemma 4's experts and their router (``block.mixture_of_experts`` computes them): E experts, each a
    GeGLU feed-forward of width M; the router's projection and its scales start as transformers'."""

    def __init__(
        self, dim: int, experts: int, hidden: int, *, rngs: nnx.Rngs, param_dtype: jnp.dtype
    ) -> None:
        self.router = param(rngs, (dim, experts), ("embed", None), param_dtype, dim**-0.5)
        self.router_scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("embed",))
        self.per_expert_scale = nnx.Param(jnp.ones((experts,), param_dtype), logical_axes=(None,))
        axes = ("experts", "embed", "mlp")
        self.gate = param(rngs, (experts, dim, hidden), axes, param_dtype, dim**-0.5)
        self.up = param(rngs, (experts, dim, hidden), axes, param_dtype, dim**-0.5)
        self.down = param(
            rngs, (experts, hidden, dim), ("experts", "mlp", "embed"), param_dtype, hidden**-0.5
        )

    def weights(self) -> dict[str, Array]:
        return {
            "router": self.router[...],
            "router_scale": self.router_scale[...],
            "per_expert_scale": self.per_expert_scale[...],
            "experts_gate": self.gate[...],
            "experts_up": self.up[...],
            "experts_down": self.down[...],
        }
