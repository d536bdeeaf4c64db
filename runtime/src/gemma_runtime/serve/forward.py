"""One engine step as a pure function: every decode slot's next token and a chunk of prompt tokens go
through the model together, so the matrix products see ``B + C`` rows (on CPU a large M is what makes a
matrix product fast; measured in shared/reference/cpu-perf.md). The chunk packs pieces of up to P
prompts (segments), so short prompts fill a step as well as one long one. Only attention is split:
decode rows attend over their own slot's cache, each chunk token over its segment's slot's cache plus
the earlier tokens of its segment. Everything else in a layer is the model's own block
(``model/block.py``, which training runs too); this module holds only the attention over the cache.

Shapes: B decode slots, C chunk tokens (a static bucket, 0 for a decode-only step), P segments, S cache
slots of a layer (the full length for global layers, a window-sized ring for local ones), D/N/K/G/H/F/V
as in the model (G query heads per KV head). Positions of -1 mark padding and idle rows: their keys are
never written, never attended.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gemma_runtime.model import AttentionType, TransformerConfig
from gemma_runtime.model.attention import MASK_VALUE, LayerCache, attention_mask
from gemma_runtime.model.block import block, embed, logits, norm, per_layer_inputs, softcap
from gemma_runtime.model.matmul import Products
from gemma_runtime.serve.weights import LayerWeights, Weights

Array = jax.Array
Axes = tuple[str | None, ...]


def _as_is(x: Array, axes: Axes) -> Array:
    return x


class Placement(NamedTuple):
    """How the step lies on devices, in the model's own terms (one device: the defaults). ``constrain``
    pins an array to its logical axes (the engine maps them to mesh axes through the one table):
    without it the partitioner may, for one, split new keys over more heads than the cache is split
    into, and then copy every layer's cache between devices to put it back. ``row_shards``: how many
    shards split the first axis of "o", "down" and "embedding", for the CPU int8 product. ``platform``:
    the devices' platform (None: JAX's default backend), which picks the int8 product."""

    constrain: Callable[[Array, Axes], Array] = _as_is
    row_shards: Mapping[str, int] = types.MappingProxyType({})
    platform: str | None = None


ONE_DEVICE = Placement()


class StepTokens(NamedTuple):
    decode_tokens: Array  # [B] int32, each slot's last sampled token
    decode_positions: Array  # [B] int32, its position; -1 for a slot not decoding this step
    chunk_tokens: Array  # [C] int32, slices of prompts one after another (padded)
    chunk_positions: Array  # [C] int32, -1 on padding
    chunk_segments: Array  # [C] int32, which segment each token belongs to (0 on padding)
    segment_slots: Array  # [P] int32, the slot of each segment (unused segments hold no token)


def _weighted_values(probs: Array, v: Array) -> Array:
    """probs [B, K, G, T, S] @ v [B, S, K, H] -> [B, T, K, G, H]. Producing [B, K, G, T, H] and moving
    the small result is several times faster on XLA:CPU than asking the product for [B, T, K, G, H]."""
    out = jnp.einsum("BKGTS,BSKH->BKGTH", probs, v)
    return jnp.transpose(out, (0, 3, 1, 2, 4))


def _attend_decode(
    config: TransformerConfig, q: Array, cache: LayerCache, *, positions: Array, window: int | None
) -> Array:
    """Decode attention over a cache that already holds each row's new key (written first: a single
    token's ring slot held a position that has left the window, so nothing attended is lost, and the
    cache is updated in place instead of copied). q [B, 1, N, H] -> [B, 1, N, H]."""
    b, _, n, h = q.shape
    kv = cache["k"].shape[2]
    q = q.reshape(b, 1, kv, n // kv, h)  # [B, 1, K, G, H]
    logits = jnp.einsum(
        "BTKGH,BSKH->BKGTS", q, cache["k"].astype(q.dtype), preferred_element_type=jnp.float32
    )
    logits = softcap(logits, config.attn_logit_softcap)
    mask = attention_mask(positions[:, None], cache["pos"], window, None, None)  # [B, 1, S]
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)  # [B, K, G, 1, S]
    return _weighted_values(probs, cache["v"].astype(q.dtype)).reshape(b, 1, n, h)


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


def _write_chunk(cache: LayerCache, k: Array, v: Array, step: StepTokens) -> LayerCache:
    """Each chunk token stores its key at ring index ``position % S`` of its segment's slot. k, v:
    [C, K, H]. A ring smaller than a segment keeps only the segment's newest S positions (two tokens must
    never race for one ring index)."""
    slots = cache["k"].shape[1]
    positions, segments = step.chunk_positions, step.chunk_segments
    owners = jnp.arange(step.segment_slots.shape[0])[:, None] == segments[None, :]  # [P, C]
    newest = jnp.max(jnp.where(owners, positions[None, :], -1), axis=1)  # [P]
    keep = (positions >= 0) & (positions > newest[segments] - slots)
    index = jnp.where(keep, positions % slots, slots)  # out of range: dropped
    rows = step.segment_slots[segments]  # [C]
    return {
        "k": cache["k"].at[rows, index].set(k.astype(cache["k"].dtype), mode="drop"),
        "v": cache["v"].at[rows, index].set(v.astype(cache["v"].dtype), mode="drop"),
        "pos": cache["pos"].at[rows, index].set(positions, mode="drop"),
    }


def _attend_chunk(
    config: TransformerConfig,
    q: Array,
    k: Array,
    v: Array,
    cache: LayerCache,
    *,
    step: StepTokens,
    window: int | None,
) -> Array:
    """Chunk attention: each token over its segment's slot's cache and the segment's tokens up to
    itself, normalised together. q [C, N, H]; k, v [C, K, H] -> [C, N, H]."""
    c, n, h = q.shape
    kv = k.shape[1]
    q = q.reshape(c, kv, n // kv, h)  # [C, K, G, H]
    slots, segments, positions = step.segment_slots, step.chunk_segments, step.chunk_positions
    p = slots.shape[0]
    rows_k = cache["k"][slots].astype(q.dtype)  # [P, S, K, H]
    rows_v = cache["v"][slots].astype(v.dtype)
    rows_pos = cache["pos"][slots]  # [P, S]
    s = rows_pos.shape[1]
    cached = jnp.einsum("CKGH,PSKH->CKGPS", q, rows_k, preferred_element_type=jnp.float32)
    own = jnp.einsum("CKGH,DKH->CKGD", q, k, preferred_element_type=jnp.float32)  # D: the chunk again
    mine = segments[:, None] == jnp.arange(p)[None, :]  # [C, P]
    cache_mask = attention_mask(positions[:, None], rows_pos.reshape(1, p * s), window, None, None)[:, 0]
    cache_mask &= jnp.repeat(mine, s, axis=1)  # [C, P * S]
    chunk_mask = attention_mask(positions[None], positions[None], window, None, None)[0]  # [C, C]
    chunk_mask &= segments[:, None] == segments[None, :]
    logits = jnp.concatenate([cached.reshape(c, kv, n // kv, p * s), own], axis=-1)
    logits = softcap(logits, config.attn_logit_softcap)
    mask = jnp.concatenate([cache_mask, chunk_mask], axis=-1)  # [C, P * S + C]
    logits = jnp.where(mask[:, None, None, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [C, K, G, P * S + C]
    from_cache = probs[..., : p * s].reshape(c, kv, n // kv, p, s)
    out = jnp.einsum("CKGPS,PSKH->CKGH", from_cache, rows_v)
    out = out + jnp.einsum("CKGD,DKH->CKGH", probs[..., p * s :], v)
    return out.reshape(c, n, h)


def _pin_cache(cache: LayerCache, pin: Callable[[Array, Axes], Array]) -> LayerCache:
    """The cache as it is stored, so an update is computed where the cache lies (left to itself, the
    partitioner may compute it split over more heads than the cache is, then gather the whole cache)."""
    kv = (None, "sequence", "kv_heads", "head_dim")  # [B, S, K, H]
    return {"k": pin(cache["k"], kv), "v": pin(cache["v"], kv), "pos": pin(cache["pos"], (None, "sequence"))}


# What a KV-shared layer reuses of its source layer (Gemma 4 E models): the source's keys and values
# of this step's rows [1, B + C, K, H], and its cache with the decode rows written (the chunk's not yet:
# the chunk attends over the cache and its own keys, as the source did).
SharedKV = tuple[Array, Array, LayerCache]


def _layer(
    config: TransformerConfig,
    attn_type: AttentionType,
    w: LayerWeights,
    x: Array,
    cache: LayerCache,
    *,
    step: StepTokens,
    placement: Placement,
    per_layer_input: Array | None = None,
    shared: SharedKV | None = None,
) -> tuple[Array, LayerCache, SharedKV]:
    """x: [1, B + C, D], decode rows first. Returns the layer's output, its updated cache and what a
    KV-shared layer would reuse of it: the model's block (``model/block.py``) around this step's
    attention over the cache. A KV-shared layer (``shared``) attends with its source's keys and values
    over its source's cache, and writes nothing (its own cache is empty)."""
    b = step.decode_tokens.shape[0]
    positions = jnp.concatenate([step.decode_positions, step.chunk_positions])[None]  # [1, B + C]
    window = config.sliding_window if attn_type == AttentionType.LOCAL else None
    seen: list[SharedKV] = []

    def attend(q: Array, k: Array, v: Array) -> tuple[Array, LayerCache]:
        """q [1, B + C, N, H], k and v [1, B + C, K, H] -> [1, B + C, N, H] and the updated cache."""
        # Decode rows: each slot stores its new key, then its one query attends over its cache row.
        pin = placement.constrain
        kv_axes = (None, None, "kv_heads", "head_dim")
        qd = q[0, :b, None]  # [B, 1, N, H]
        kd, vd = pin(k[0, :b, None], kv_axes), pin(v[0, :b, None], kv_axes)  # [B, 1, K, H]
        if shared is None:
            updated = _pin_cache(_write_rows(cache, kd, vd, step.decode_positions), pin)
        else:
            updated = shared[2]
        seen.append((k, v, updated))
        outs = [_attend_decode(config, qd, updated, positions=step.decode_positions, window=window)[:, 0]]
        if step.chunk_tokens.shape[0]:
            # Chunk slots are not decoding, so their rows are as before. A chunk may be longer than a
            # ring: it attends first and is written after.
            qc, kc, vc = q[0, b:], pin(k[0, b:], kv_axes[1:]), pin(v[0, b:], kv_axes[1:])  # [C, *, H]
            outs.append(_attend_chunk(config, qc, kc, vc, updated, step=step, window=window))  # [C, N, H]
            if shared is None:
                updated = _pin_cache(_write_chunk(updated, kc, vc, step), pin)
        return jnp.concatenate(outs, axis=0)[None], cache if shared is not None else updated

    # The engine maps the step over data shards with vmap, which grouped expert products cannot take;
    # inside it each shard's rows are whole.
    products = Products(placement.row_shards, placement.platform, grouped_experts=False, token_axes=())
    out, new_cache = block(
        config,
        attn_type,
        w,
        x,
        positions,
        attend=attend,
        products=products,
        shared_kv=None if shared is None else shared[:2],
        per_layer_input=per_layer_input,
    )
    return out, new_cache, seen[0]


def forward(
    config: TransformerConfig,
    weights: Weights,
    cache: list[LayerCache],
    step: StepTokens,
    *,
    chunk_rows: Array,
    dtype: jnp.dtype,
    placement: Placement = ONE_DEVICE,
) -> tuple[Array, list[LayerCache]]:
    """Logits [B + R, V] (f32): one row per decode slot, then the chunk's rows at indices ``chunk_rows``
    [R] (the engine asks for each segment's last token; a decode-only step asks for none),
    and the updated cache; ``placement`` as the engine lays the step out."""
    tokens = jnp.concatenate([step.decode_tokens, step.chunk_tokens])[None]  # [1, B + C]
    x = embed(weights.embedding, tokens, dtype)  # [1, B + C, D]
    products = Products(placement.row_shards, placement.platform)
    per_layer = None
    if weights.per_layer is not None:  # Gemma 4 E models: [1, B + C, L, P]
        per_layer = per_layer_inputs(
            config,
            tokens,
            x,
            table=weights.per_layer["table"],
            projection=weights.per_layer["projection"],
            norm_scale=weights.per_layer["norm"],
            products=products,
        )
    sources = config.kv_sources
    kept: dict[int, SharedKV] = {}  # what KV-shared layers reuse, by source layer
    new_cache = []
    layers = zip(config.attention_types, weights.layers, cache, strict=True)
    for i, (attn_type, w, layer_cache) in enumerate(layers):
        source = sources[i]
        x, updated, reused = _layer(
            config,
            attn_type,
            w,
            x,
            layer_cache,
            step=step,
            placement=placement,
            per_layer_input=None if per_layer is None else per_layer[:, :, i],
            shared=None if source is None else kept[source],
        )
        if i in sources:
            kept[i] = reused
        new_cache.append(updated)
    b = step.decode_tokens.shape[0]
    picked = jnp.minimum(b + chunk_rows, x.shape[1] - 1)  # [R]
    rows = jnp.concatenate([x[:, :b], jnp.take(x, picked, axis=1)], axis=1)  # [1, B + R, D]
    hidden = norm(config, rows, weights.final_norm)
    return logits(config, weights.embedding, hidden, products)[0], new_cache
