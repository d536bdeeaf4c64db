"""The Gemma decoder: embed, N blocks of (attention, feed-forward) with pre- and optional post-norms,
final norm, tied output projection, optional final soft-cap. The modules hold the parameters; the math
is ``block.py``'s, which serving shares.

Gemma 4 adds per-layer inputs (a second token table and a projection of the embeddings, one slice per
layer) and KV sharing: a shared layer attends with the keys and values its source layer computed for
the same tokens, over the source's cache (its own cache entry is an empty placeholder)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gemma_runtime.model.attention import Attention, Kernel, LayerCache, attend_batch, init_layer_cache
from gemma_runtime.model.block import block, logits, per_layer_inputs
from gemma_runtime.model.layers import Embedder, FeedForward, MixtureOfExperts, RMSNorm, param
from gemma_runtime.parallel.sharding import constrain
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
Cache = list[LayerCache]


KeysValues = tuple[Array, Array]  # one layer's keys and values [B, T, K, H] for this call's tokens
# The residual stream and the logits, split by batch over the mesh a training step is traced for.
ACTIVATIONS = ("batch", "sequence", None)
LOGITS = ("batch", "sequence", "vocab")
_NORMS = ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")
# Gemma 4's further parameters, named only where a block has them (serving lays out what it is given).
_GEMMA4_NORMS = ("pre_ffw_norm_2", "post_ffw_norm_1", "post_ffw_norm_2", "post_per_layer_norm")
_GEMMA4_WEIGHTS = ("per_layer_gate", "per_layer_projection", "layer_scalar")


class Block(nnx.Module):
    def __init__(
        self,
        config: TransformerConfig,
        attn_type: AttentionType,
        *,
        rngs: nnx.Rngs,
        param_dtype: jnp.dtype,
        index: int = 0,
    ) -> None:
        d, eps = config.embed_dim, config.norm_eps

        def norm() -> RMSNorm:
            return RMSNorm(d, eps=eps, axis="embed", param_dtype=param_dtype, plus_one=config.norm_plus_one)

        shared = config.kv_sources[index] is not None
        self.pre_attention_norm = norm()
        self.attn = Attention(config, attn_type, rngs=rngs, param_dtype=param_dtype, shared=shared)
        self.post_attention_norm = norm() if config.use_post_attn_norm else None
        self.pre_ffw_norm = norm()
        self.mlp = FeedForward(d, config.hidden_dim_of(index), rngs=rngs, param_dtype=param_dtype)
        self.post_ffw_norm = norm() if config.use_post_ffw_norm else None
        if config.num_experts:
            self.moe = MixtureOfExperts(
                d, config.num_experts, config.expert_hidden_dim, rngs=rngs, param_dtype=param_dtype
            )
            self.pre_ffw_norm_2, self.post_ffw_norm_1, self.post_ffw_norm_2 = norm(), norm(), norm()
        if config.per_layer_input_dim:
            p = config.per_layer_input_dim
            self.per_layer_gate = param(rngs, (d, p), ("embed", None), param_dtype, d**-0.5)
            self.per_layer_projection = param(rngs, (p, d), (None, "embed"), param_dtype, p**-0.5)
            self.post_per_layer_norm = norm()
        if config.use_layer_scalar:
            self.layer_scalar = nnx.Param(jnp.ones((1,), param_dtype), logical_axes=(None,))

    def weights(self) -> dict[str, Array | None]:
        """The block's parameters by name, as ``block.block`` reads them: Gemma 1-3's names always (None
        for an absent norm or projection), Gemma 4's further ones where the block has them."""
        out = {**self.attn.weights(), **self.mlp.weights()}
        moe = getattr(self, "moe", None)
        if moe is not None:
            out.update(moe.weights())
        for name in _NORMS:
            norm = getattr(self, name)
            out[name] = None if norm is None else norm.scale[...]
        for name in _GEMMA4_NORMS:
            if (norm := getattr(self, name, None)) is not None:
                out[name] = norm.scale[...]
        for name in _GEMMA4_WEIGHTS:
            if (weight := getattr(self, name, None)) is not None:
                out[name] = weight[...]
        return out

    def __call__(
        self,
        x: Array,
        positions: Array,
        segment_ids: Array | None,
        cache: LayerCache | None,
        *,
        per_layer_input: Array | None = None,
        shared_kv: KeysValues | None = None,
        kernel: Kernel = "xla",
    ) -> tuple[Array, LayerCache | None, KeysValues]:
        """The block's output, its updated cache and the keys and values it attended with (a KV-shared
        layer passes its source's as ``shared_kv``, and ``cache`` is then its source's cache); ``kernel``:
        ``attention.attend_batch``'s."""
        config, attn_type = self.attn.config, self.attn.attn_type
        seen: list[KeysValues] = []

        def attend(q: Array, k: Array, v: Array) -> tuple[Array, LayerCache | None]:
            seen.append((k, v))
            return attend_batch(
                config,
                attn_type,
                q,
                k,
                v,
                positions=positions,
                segment_ids=segment_ids,
                cache=cache,
                kernel=kernel,
            )

        x, new_cache = block(
            config,
            attn_type,
            self.weights(),
            x,
            positions,
            attend=attend,
            shared_kv=shared_kv,
            per_layer_input=per_layer_input,
        )
        return x, new_cache, seen[0]


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
        if config.per_layer_input_dim:
            d, width = config.embed_dim, config.num_layers * config.per_layer_input_dim
            rows = config.per_layer_vocab_size or config.vocab_size
            self.per_layer_embedding = param(rngs, (rows, width), ("vocab", None), param_dtype, 1.0)
            self.per_layer_projection = param(rngs, (d, width), ("embed", None), param_dtype, d**-0.5)
            self.per_layer_projection_norm = RMSNorm(
                config.per_layer_input_dim,
                eps=config.norm_eps,
                axis=None,
                param_dtype=param_dtype,
                plus_one=config.norm_plus_one,
            )
        self.layers = nnx.List(
            [
                Block(config, t, rngs=rngs, param_dtype=param_dtype, index=i)
                for i, t in enumerate(config.attention_types)
            ]
        )
        self.final_norm = RMSNorm(
            config.embed_dim,
            eps=config.norm_eps,
            axis="embed",
            param_dtype=param_dtype,
            plus_one=config.norm_plus_one,
        )
        self.remat = "none"  # training sets "minimal" or "full": recompute blocks in the backward pass
        # Training sets these too: how a batch attends without a cache ("auto": splash attention on TPUs,
        # attention.attend_batch), and whether the layers run as a scan (``scan_groups``).
        self.attention: Kernel = "xla"
        self.scan_layers = False

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
        x = constrain(self.embedder.encode(tokens, self.dtype), ACTIVATIONS)  # [B, T, D]
        per_layer = None
        if self.config.per_layer_input_dim:
            per_layer = per_layer_inputs(
                self.config,
                tokens,
                x,
                table=self.per_layer_embedding[...],
                projection=self.per_layer_projection[...],
                norm_scale=self.per_layer_projection_norm.scale[...],
            )  # [B, T, L, P]
        sources = self.config.kv_sources
        kept: dict[int, KeysValues] = {}  # the keys and values of the layers others reuse
        new_cache: Cache | None = [] if cache is not None else None
        start = 0  # the first layer run unrolled
        groups = scan_groups(self.config) if cache is None and self.scan_layers else 0
        if groups:
            x = self._scanned(x, positions, segment_ids, groups)
            start = groups * len(self.config.attention_pattern)
        for i, layer in enumerate(self.layers):
            if i < start:
                continue
            source = sources[i]
            shared = None if source is None else kept[source]
            layer_input = None if per_layer is None else per_layer[:, :, i]
            if cache is None and self.remat != "none":
                x, kv = _rematted(self.remat, self.attention)(
                    layer, x, positions, segment_ids, (layer_input, shared)
                )
            else:
                # A shared layer attends over its source's cache as it was before this call.
                layer_cache = None if cache is None else cache[i if source is None else source]
                x, updated, kv = layer(
                    x,
                    positions,
                    segment_ids,
                    layer_cache,
                    per_layer_input=layer_input,
                    shared_kv=shared,
                    kernel=self.attention,
                )
                if new_cache is not None and cache is not None:
                    new_cache.append(cache[i] if source is not None or updated is None else updated)
            x = constrain(x, ACTIVATIONS)
            if i in sources:
                kept[i] = kv
        return self.final_norm(x), new_cache

    def _scanned(self, x: Array, positions: Array, segment_ids: Array | None, groups: int) -> Array:
        """The first ``groups`` periods of the attention pattern (1 layer for Gemma 1, 2 for Gemma 2, 6 for
        Gemma 3) as a scan over their weights stacked at trace time, one period a step, each layer under
        the remat policy. Unrolled, XLA keeps far more live: a Gemma 2 9B step, full remat, batch 1 x 2048
        per chip on v5e 4x4, held 16.57 GiB per chip unrolled and 13.28 GiB scanned (splash attention in
        both). The stack is a copy of the layer weights (in the compute dtype), which costs where weights
        dominate: Gemma 2B, batch 1 x 256 on v5e 2x2, 11.17 -> 11.67 GiB (bf16), 12.66 -> 14.01 (f32)."""
        config, pattern = self.config, self.config.attention_pattern
        period = len(pattern)
        stacked = [
            _stacked([self.layers[j + period * g] for g in range(groups)], self.dtype) for j in range(period)
        ]
        kernel = self.attention

        def one(attn_type: AttentionType) -> Any:
            def run(x: Array, p: dict[str, Any], positions: Array, segment_ids: Array | None) -> Array:
                def attend(q: Array, k: Array, v: Array) -> tuple[Array, None]:
                    out, _ = attend_batch(
                        config,
                        attn_type,
                        q,
                        k,
                        v,
                        positions=positions,
                        segment_ids=segment_ids,
                        cache=None,
                        kernel=kernel,
                    )
                    return out, None

                y, _ = block(config, attn_type, p, x, positions, attend=attend)
                return constrain(y, ACTIVATIONS)

            if self.remat == "none":
                return run
            # The scan already keeps XLA from merging steps: no optimisation barriers (as MaxText).
            return jax.checkpoint(run, policy=REMAT_POLICIES[self.remat], prevent_cse=False)

        layers = [one(t) for t in pattern]

        def step(x: Array, weights: list[dict[str, Any]]) -> tuple[Array, None]:
            for layer, p in zip(layers, weights, strict=True):
                x = layer(x, p, positions, segment_ids)
            return x, None

        x, _ = jax.lax.scan(step, x, stacked)
        return x

    def logits(self, hidden: Array) -> Array:
        return constrain(logits(self.config, self.embedder.input_embedding[...], hidden), LOGITS)

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
        """A cache per layer; a KV-shared layer's is empty (it reads its source's)."""
        dtype = dtype or self.dtype
        sources = self.config.kv_sources
        return [
            init_layer_cache(self.config, t, batch, max_len if sources[i] is None else 0, dtype)
            for i, t in enumerate(self.config.attention_types)
        ]


# What the backward pass keeps of each block: "minimal" saves the matrix products' outputs (recomputing
# only the cheap element-wise work), "full" saves nothing but the block's input.
REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def scan_groups(config: TransformerConfig) -> int:
    """How many whole periods of the attention pattern a training forward pass runs as a scan (the
    rest of the layers run unrolled after them); 0: none, where there are fewer than two periods or
    layers depend on others (Gemma 4's KV-shared layers and per-layer inputs stay unrolled)."""
    if config.num_kv_shared_layers or config.per_layer_input_dim:
        return 0
    groups = config.num_layers // len(config.attention_pattern)
    return groups if groups >= 2 else 0


# The weights every product casts to the compute dtype (``matmul.project``): stacked in that dtype, the
# scan's copy of them is half the f32 parameters' size under bf16, and the arithmetic is unchanged.
_CAST = ("q", "k", "v", "o", "gate", "up", "down")


def _stacked(blocks: list[Block], dtype: jnp.dtype) -> dict[str, Any]:
    """The blocks' weights by name, each stacked [G, ...] over the blocks (None where they have none)."""
    weights = [b.weights() for b in blocks]
    out: dict[str, Any] = {}
    for name, first in weights[0].items():
        parts: list[Any] = [w[name] for w in weights]
        if first is None:
            out[name] = None
        else:
            out[name] = jnp.stack([p.astype(dtype) for p in parts] if name in _CAST else parts)
    return out


def _rematted(policy: str, kernel: Kernel = "xla") -> Any:
    def run(
        layer: Block,
        x: Array,
        positions: Array,
        segment_ids: Array | None,
        extras: tuple[Array | None, KeysValues | None],  # the per-layer input, the shared keys and values
    ) -> tuple[Array, KeysValues]:
        out, _, kv = layer(
            x, positions, segment_ids, None, per_layer_input=extras[0], shared_kv=extras[1], kernel=kernel
        )
        return out, kv

    return nnx.remat(run, policy=REMAT_POLICIES[policy])
