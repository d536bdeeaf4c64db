"""The model's math, once, as pure functions over arrays: the embedding, RMSNorm, the attention
projections with QK-norm, RoPE and query scaling, soft-capping, the GeGLU feed-forward, the output
projection, and ``block``, which puts them together around an attention core passed in as a function.

Both paths call these: the NNX modules (training, and the model's own cache) and the serving step
(``serve/forward.py``). They differ only in how they attend (over a batch with masks, or over the
serving KV cache: the ``attend`` argument) and in how they hold parameters. A layer's parameters come
as a mapping by name (q, k, v, o, gate, up, down, and the norm scales, None for a norm the config has
not); a projection is held in the model's layout (q/k/v [N, D, H], o [N, H, D]) or as serving's flat
matrix (q/k/v [D, N*H], o [N*H, D], possibly int8: ``serve/weights.py``), and the functions read both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gemma_runtime.model.matmul import PLAIN, Products, Weight, ndim, take_rows
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
Params = Mapping[str, Any]  # a layer's weights and norm scales by name
# The attention core: q [B, T, N, H] (roped and scaled), k and v [B, T, K, H] -> the attended values
# [B, T, N, H] and whatever the core keeps (an updated cache).
Attend = Callable[[Array, Array, Array], tuple[Array, Any]]


def rms_norm(x: Array, scale: Array | None, eps: float) -> Array:
    """x / rms(x) * (1 + scale), computed in f32 whatever the dtype; no scale: x as it is."""
    if scale is None:
        return x
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def softcap(x: Array, cap: float | None) -> Array:
    return x if cap is None else jnp.tanh(x / cap) * cap


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


def embed(table: Weight, tokens: Array, dtype: jnp.dtype) -> Array:
    """Token embeddings [..., D] of ``tokens`` [...], scaled by sqrt(D). The factor is cast to the
    activation dtype first, as the reference implementations do."""
    x = take_rows(table, tokens, dtype)  # [..., D]
    return x * jnp.asarray(math.sqrt(x.shape[-1]), dtype)


def logits(config: TransformerConfig, table: Weight, hidden: Array, products: Products = PLAIN) -> Array:
    """The tied output projection of final-normed ``hidden`` [B, T, D] -> [B, T, V] f32, soft-capped."""
    out = products(hidden, table, "BTD,VD->BTV", "embedding").astype(jnp.float32)
    return softcap(out, config.final_logit_softcap)


def to_heads(x: Array, weight: Weight, heads: int, head_dim: int, products: Products = PLAIN) -> Array:
    """x [B, T, D] -> [B, T, N, H] through q, k or v, in either layout."""
    if ndim(weight) == 3:  # [N, D, H]
        return products(x, weight, "BTD,NDH->BTNH")
    b, t, _ = x.shape
    return products(x, weight, "BTD,DE->BTE").reshape(b, t, heads, head_dim)  # [B, T, N, H]


def from_heads(x: Array, weight: Weight, products: Products = PLAIN) -> Array:
    """x [B, T, N, H] -> [B, T, D] through o, in either layout."""
    if ndim(weight) == 3:  # [N, H, D]
        return products(x, weight, "BTNH,NHD->BTD", "o")
    b, t, n, h = x.shape
    return products(x.reshape(b, t, n * h), weight, "BTE,ED->BTD", "o")


def queries_keys_values(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    products: Products = PLAIN,
) -> tuple[Array, Array, Array]:
    """Normed input x [B, T, D] at ``positions`` [B, T] -> q [B, T, N, H] (QK-normed, roped, scaled),
    k [B, T, K, H] (QK-normed, roped) and v [B, T, K, H]."""
    n, kv, h = config.num_heads, config.num_kv_heads, config.head_dim
    q = to_heads(x, p["q"], n, h, products)
    k = to_heads(x, p["k"], kv, h, products)
    v = to_heads(x, p["v"], kv, h, products)
    if config.use_qk_norm:
        q, k = rms_norm(q, p["query_norm"], config.norm_eps), rms_norm(k, p["key_norm"], config.norm_eps)
    local = attn_type == AttentionType.LOCAL
    base = config.rope_base_local if local else config.rope_base_global
    scale = 1.0 if local else config.rope_scale_global
    q = apply_rope(q, positions, base=base, scale=scale) * jnp.asarray(config.query_scale, x.dtype)
    k = apply_rope(k, positions, base=base, scale=scale)
    return q, k, v


def attention(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    attend: Attend,
    products: Products = PLAIN,
) -> tuple[Array, Any]:
    """The attention sub-layer of normed x [B, T, D] -> ([B, T, D], what ``attend`` keeps)."""
    q, k, v = queries_keys_values(config, attn_type, p, x, positions, products=products)
    out, kept = attend(q, k, v)  # [B, T, N, H]
    return from_heads(out, p["o"], products), kept


def feed_forward(p: Params, x: Array, products: Products = PLAIN) -> Array:
    """GeGLU: gelu_tanh(x W_gate) * (x W_up), then W_down. x [B, T, D] -> [B, T, D]."""
    gate = products(x, p["gate"], "BTD,DF->BTF")
    up = products(x, p["up"], "BTD,DF->BTF")
    hidden = jax.nn.gelu(gate, approximate=True) * up  # [B, T, F]
    return products(hidden, p["down"], "BTF,FD->BTD", "down")


def block(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    attend: Attend,
    products: Products = PLAIN,
) -> tuple[Array, Any]:
    """One decoder block: pre-norm attention and feed-forward, each with its optional post-norm and a
    residual. x [B, T, D] -> ([B, T, D], what ``attend`` keeps)."""
    eps = config.norm_eps
    h = rms_norm(x, p["pre_attention_norm"], eps)
    attn, kept = attention(config, attn_type, p, h, positions, attend=attend, products=products)
    x = x + rms_norm(attn, p["post_attention_norm"], eps)
    ffw = feed_forward(p, rms_norm(x, p["pre_ffw_norm"], eps), products)
    return x + rms_norm(ffw, p["post_ffw_norm"], eps), kept
