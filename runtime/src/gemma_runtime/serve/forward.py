"""One engine step as a pure function: every decode slot's next token and one chunk of one slot's prompt
go through the model together, so the matrix products see ``B + C`` rows (on CPU a large M is what makes
a matrix product fast; measured in shared/reference/cpu-perf.md). Only attention is split: decode rows
attend over their own slot's cache, the prompt chunk over its slot's cache plus itself.

Shapes: B decode slots, C prompt-chunk tokens (a static bucket, 0 for a decode-only step), S cache slots
of a layer (the full length for global layers, a window-sized ring for local ones), D/N/K/H/F/V as in
the model. Positions of -1 mark padding and idle rows: their keys are never written, never attended.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gemma_runtime.model import AttentionType, TransformerConfig
from gemma_runtime.model.attention import MASK_VALUE, LayerCache, attention_mask
from gemma_runtime.model.layers import apply_rope, softcap
from gemma_runtime.serve.weights import LayerWeights, Weights, embed, project

Array = jax.Array


class StepTokens(NamedTuple):
    decode_tokens: Array  # [B] int32, each slot's last sampled token
    decode_positions: Array  # [B] int32, its position; -1 for a slot not decoding this step
    chunk_tokens: Array  # [C] int32, a slice of one prompt (padded)
    chunk_positions: Array  # [C] int32, -1 on padding
    chunk_slot: Array  # [] int32, the slot the chunk belongs to


def rms_norm(x: Array, scale: Array | None, eps: float) -> Array:
    """The model's RMSNorm: x / rms(x) * (1 + scale), in f32."""
    if scale is None:
        return x
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def _attend(config: TransformerConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """q [B, T, N, H], k/v [B, S, K, H], mask [B, T, S] -> [B, T, N, H] (grouped-query attention)."""
    b, t, n, h = q.shape
    kv = config.num_kv_heads
    q = q.reshape(b, t, kv, n // kv, h)  # [B, T, K, G, H]
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
    logits = softcap(logits, config.attn_logit_softcap)
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, K, G, T, S]
    return _weighted_values(probs, v).reshape(b, t, n, h)


def _weighted_values(probs: Array, v: Array) -> Array:
    """probs [B, K, G, T, S] @ v [B, S, K, H] -> [B, T, K, G, H]. Producing [B, K, G, T, H] and moving
    the small result is several times faster on XLA:CPU than asking the product for [B, T, K, G, H]."""
    out = jnp.einsum("BKGTS,BSKH->BKGTH", probs, v)
    return jnp.transpose(out, (0, 3, 1, 2, 4))


def _attend_decode(
    config: TransformerConfig,
    q: Array,
    k: Array,
    v: Array,
    cache: LayerCache,
    *,
    positions: Array,
    window: int | None,
) -> Array:
    """Decode attention without copying the cache: scores against the cache [B, S] and against the
    row's own new key are normalised together. q [B, 1, N, H]; k, v [B, 1, K, H] -> [B, 1, N, H]."""
    b, _, n, h = q.shape
    kv = config.num_kv_heads
    q = q.reshape(b, 1, kv, n // kv, h)  # [B, 1, K, G, H]
    dpos = positions[:, None]  # [B, 1]
    cached = jnp.einsum(
        "BTKGH,BSKH->BKGTS", q, cache["k"].astype(q.dtype), preferred_element_type=jnp.float32
    )
    own = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)  # [B, K, G, 1, 1]
    logits = softcap(jnp.concatenate([cached, own], axis=-1), config.attn_logit_softcap)
    key_pos = jnp.concatenate([cache["pos"], dpos], axis=1)  # [B, S + 1]
    mask = attention_mask(dpos, key_pos, window, None, None)  # [B, 1, S + 1]
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, K, G, 1, S + 1]
    out = _weighted_values(probs[..., :-1], cache["v"].astype(v.dtype))
    out = out + _weighted_values(probs[..., -1:], v)
    return out.reshape(b, 1, n, h)


def _write_rows(cache: LayerCache, k: Array, v: Array, positions: Array) -> LayerCache:
    """Decode rows: slot b stores its one new key at ring index ``position % S``; rows at -1 write nothing.
    k, v: [B, 1, K, H]; positions [B]."""
    slots = cache["k"].shape[1]
    batch = jnp.arange(k.shape[0])
    index = jnp.where(positions >= 0, positions % slots, slots)  # out of range: dropped
    return {
        "k": cache["k"].at[batch, index].set(k[:, 0].astype(cache["k"].dtype), mode="drop"),
        "v": cache["v"].at[batch, index].set(v[:, 0].astype(cache["v"].dtype), mode="drop"),
        "pos": cache["pos"].at[batch, index].set(positions, mode="drop"),
    }


def _write_chunk(cache: LayerCache, slot: Array, k: Array, v: Array, positions: Array) -> LayerCache:
    """One slot stores a prompt chunk. k, v: [C, K, H]; positions [C]. A ring smaller than the chunk
    keeps only the newest S positions (two chunk tokens must never race for one ring index)."""
    slots = cache["k"].shape[1]
    newest = jnp.max(positions)
    keep = (positions >= 0) & (positions > newest - slots)
    index = jnp.where(keep, positions % slots, slots)
    return {
        "k": cache["k"].at[slot, index].set(k.astype(cache["k"].dtype), mode="drop"),
        "v": cache["v"].at[slot, index].set(v.astype(cache["v"].dtype), mode="drop"),
        "pos": cache["pos"].at[slot, index].set(positions, mode="drop"),
    }


def _layer(
    config: TransformerConfig,
    attn_type: AttentionType,
    w: LayerWeights,
    x: Array,
    cache: LayerCache,
    *,
    step: StepTokens,
) -> tuple[Array, LayerCache]:
    """x: [1, B + C, D], decode rows first. Returns the layer's output and its updated cache."""
    b, t = step.decode_tokens.shape[0], x.shape[1]
    n, kv, hd = config.num_heads, config.num_kv_heads, config.head_dim
    positions = jnp.concatenate([step.decode_positions, step.chunk_positions])[None]  # [1, B + C]
    h = rms_norm(x, w["pre_attention_norm"], config.norm_eps)
    q = project(h, w["q"], "BTD,DE->BTE").reshape(1, t, n, hd)  # [1, B + C, N, H]
    k = project(h, w["k"], "BTD,DE->BTE").reshape(1, t, kv, hd)  # [1, B + C, K, H]
    v = project(h, w["v"], "BTD,DE->BTE").reshape(1, t, kv, hd)
    if config.use_qk_norm:
        q, k = rms_norm(q, w["query_norm"], config.norm_eps), rms_norm(k, w["key_norm"], config.norm_eps)
    local = attn_type == AttentionType.LOCAL
    base = config.rope_base_local if local else config.rope_base_global
    scale = 1.0 if local else config.rope_scale_global
    q = apply_rope(q, positions, base=base, scale=scale) * jnp.asarray(config.query_scale, x.dtype)
    k = apply_rope(k, positions, base=base, scale=scale)
    window = config.sliding_window if local else None
    dtype = x.dtype

    # Decode rows: one query per slot over that slot's cache plus its own new key.
    qd, kd, vd = q[0, :b, None], k[0, :b, None], v[0, :b, None]  # [B, 1, *, H]
    out_decode = _attend_decode(config, qd, kd, vd, cache, positions=step.decode_positions, window=window)

    # The prompt chunk: C queries over its slot's cache row plus the chunk itself.
    outs = [out_decode[:, 0]]  # [B, N, H]
    new_cache = _write_rows(cache, kd, vd, step.decode_positions)
    if step.chunk_tokens.shape[0]:
        qc, kc, vc = q[:, b:], k[:, b:], v[:, b:]  # [1, C, *, H]
        cpos = step.chunk_positions[None]  # [1, C]
        row = {name: jax.lax.dynamic_index_in_dim(cache[name], step.chunk_slot, 0) for name in cache}  # type: ignore[literal-required]
        keys = jnp.concatenate([row["k"].astype(dtype), kc], axis=1)  # [1, S + C, K, H]
        values = jnp.concatenate([row["v"].astype(dtype), vc], axis=1)
        key_pos = jnp.concatenate([row["pos"], cpos], axis=1)  # [1, S + C]
        out_chunk = _attend(config, qc, keys, values, attention_mask(cpos, key_pos, window, None, None))
        outs.append(out_chunk[0])  # [C, N, H]
        new_cache = _write_chunk(new_cache, step.chunk_slot, kc[0], vc[0], step.chunk_positions)

    attn = jnp.concatenate(outs, axis=0).reshape(1, t, n * hd)  # [1, B + C, N*H]
    attn = project(attn, w["o"], "BTE,ED->BTD")
    x = x + rms_norm(attn, w["post_attention_norm"], config.norm_eps)
    h = rms_norm(x, w["pre_ffw_norm"], config.norm_eps)
    gate = project(h, w["gate"], "BTD,DF->BTF")
    up = project(h, w["up"], "BTD,DF->BTF")
    ffw = project(jax.nn.gelu(gate, approximate=True) * up, w["down"], "BTF,FD->BTD")
    return x + rms_norm(ffw, w["post_ffw_norm"], config.norm_eps), new_cache


def forward(
    config: TransformerConfig,
    weights: Weights,
    cache: list[LayerCache],
    step: StepTokens,
    *,
    chunk_rows: Array,
    dtype: jnp.dtype,
) -> tuple[Array, list[LayerCache]]:
    """Logits [B + R, V] (f32): one row per decode slot, then the chunk's rows at indices ``chunk_rows``
    [R] (the engine asks for the last real prompt token only; a decode-only step repeats the last decode
    row), and the updated cache."""
    tokens = jnp.concatenate([step.decode_tokens, step.chunk_tokens])[None]  # [1, B + C]
    x = embed(weights.embedding, tokens, dtype)
    x = x * jnp.asarray(config.embed_dim**0.5, dtype)  # [1, B + C, D]
    new_cache = []
    for attn_type, w, layer_cache in zip(config.attention_types, weights.layers, cache, strict=True):
        x, updated = _layer(config, attn_type, w, x, layer_cache, step=step)
        new_cache.append(updated)
    b = step.decode_tokens.shape[0]
    picked = jnp.minimum(b + chunk_rows, x.shape[1] - 1)  # [R]
    rows = jnp.concatenate([x[:, :b], jnp.take(x, picked, axis=1)], axis=1)  # [1, B + R, D]
    hidden = rms_norm(rows, weights.final_norm, config.norm_eps)
    logits = project(hidden, weights.embedding, "BTD,VD->BTV").astype(jnp.float32)
    return softcap(logits, config.final_logit_softcap)[0], new_cache
