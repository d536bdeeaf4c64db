"""The Gemma decoder: embed, N blocks of (attention, feed-forward) with pre- and optional post-norms,
final norm, tied output projection, optional final soft-cap. The modules hold the parameters; the math
is ``block.py``'s, which serving shares."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gemma_runtime.model.attention import Attention, LayerCache, attend_batch, init_layer_cache
from gemma_runtime.model.block import block, logits
from gemma_runtime.model.layers import Embedder, FeedForward, RMSNorm
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
Cache = list[LayerCache]


class Block(nnx.Module):
    def __init__(
        self, config: TransformerConfig, attn_type: AttentionType, *, rngs: nnx.Rngs, param_dtype: jnp.dtype
    ) -> None:
        d, eps = config.embed_dim, config.norm_eps

        def norm() -> RMSNorm:
            return RMSNorm(d, eps=eps, axis="embed", param_dtype=param_dtype)

        self.pre_attention_norm = norm()
        self.attn = Attention(config, attn_type, rngs=rngs, param_dtype=param_dtype)
        self.post_attention_norm = norm() if config.use_post_attn_norm else None
        self.pre_ffw_norm = norm()
        self.mlp = FeedForward(d, config.hidden_dim, rngs=rngs, param_dtype=param_dtype)
        self.post_ffw_norm = norm() if config.use_post_ffw_norm else None

    def weights(self) -> dict[str, Array | None]:
        """The block's parameters by name, as ``block.block`` reads them (None for an absent norm)."""
        out = {**self.attn.weights(), **self.mlp.weights()}
        for name in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            norm = getattr(self, name)
            out[name] = None if norm is None else norm.scale[...]
        return out

    def __call__(
        self, x: Array, positions: Array, segment_ids: Array | None, cache: LayerCache | None
    ) -> tuple[Array, LayerCache | None]:
        config, attn_type = self.attn.config, self.attn.attn_type
        attend = functools.partial(
            attend_batch, config, attn_type, positions=positions, segment_ids=segment_ids, cache=cache
        )
        return block(config, attn_type, self.weights(), x, positions, attend=attend)


class Transformer(nnx.Module):
    """``logits, cache = model(tokens, positions, cache=cache)``; tokens and positions are [B, T]."""

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        param_dtype: jnp.dtype = jnp.float32,
        dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.config = config
        self.dtype = dtype
        self.embedder = Embedder(config.vocab_size, config.embed_dim, rngs=rngs, param_dtype=param_dtype)
        self.layers = nnx.List(
            [Block(config, t, rngs=rngs, param_dtype=param_dtype) for t in config.attention_types]
        )
        self.final_norm = RMSNorm(
            config.embed_dim, eps=config.norm_eps, axis="embed", param_dtype=param_dtype
        )
        self.remat = "none"  # training sets "minimal" or "full": recompute blocks in the backward pass

    def hidden(
        self,
        tokens: Array,
        positions: Array | None = None,
        *,
        segment_ids: Array | None = None,
        cache: Cache | None = None,
    ) -> tuple[Array, Cache | None]:
        """The final-normed hidden states [B, T, D] (before the output projection)."""
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = self.embedder.encode(tokens, self.dtype)  # [B, T, D]
        new_cache: Cache | None = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            if cache is None and self.remat != "none":
                x = _rematted(self.remat)(layer, x, positions, segment_ids)
                continue
            x, layer_cache = layer(x, positions, segment_ids, None if cache is None else cache[i])
            if new_cache is not None and layer_cache is not None:
                new_cache.append(layer_cache)
        return self.final_norm(x), new_cache

    def logits(self, hidden: Array) -> Array:
        return logits(self.config, self.embedder.input_embedding[...], hidden)

    def __call__(
        self,
        tokens: Array,
        positions: Array | None = None,
        *,
        segment_ids: Array | None = None,
        cache: Cache | None = None,
    ) -> tuple[Array, Cache | None]:
        hidden, cache = self.hidden(tokens, positions, segment_ids=segment_ids, cache=cache)
        return self.logits(hidden), cache

    def init_cache(self, batch: int, max_len: int, dtype: jnp.dtype | None = None) -> Cache:
        dtype = dtype or self.dtype
        return [init_layer_cache(self.config, t, batch, max_len, dtype) for t in self.config.attention_types]


# What the backward pass keeps of each block: "minimal" saves the matrix products' outputs (recomputing
# only the cheap element-wise work), "full" saves nothing but the block's input.
REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def _rematted(policy: str) -> Any:
    def run(layer: Block, x: Array, positions: Array, segment_ids: Array | None) -> Array:
        return layer(x, positions, segment_ids, None)[0]

    return nnx.remat(run, policy=REMAT_POLICIES[policy])
