"""Per-request sampling, vectorised over the decode batch: every row has its own temperature, top-k,
top-p and random key, so one jitted step serves a batch of requests with different settings.

Temperature 0 is greedy. top_k 0 and top_p 1 disable those filters. The log-probability returned is the
model's (before temperature and filtering), as OpenAI's `logprobs` reports it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

Array = jax.Array
NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """One request's settings (host side)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: Array, top_k: Array, top_p: Array) -> Array:
    """Mask everything outside each row's top-k and top-p nucleus. logits: [B, V]; top_k, top_p: [B]."""
    vocab = logits.shape[-1]
    order = jnp.argsort(-logits, axis=-1)  # [B, V] token ids, most likely first
    ranked = jnp.take_along_axis(logits, order, axis=-1)  # [B, V]
    rank = jnp.arange(vocab)[None, :]  # [1, V]
    k = jnp.where(top_k > 0, top_k, vocab)[:, None]  # [B, 1]
    probs = jax.nn.softmax(ranked, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
    keep = (rank < k) & (before < top_p[:, None])  # the most likely token always stays
    ranked = jnp.where(keep, ranked, NEG_INF)
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(ranked, inverse, axis=-1)  # [B, V] back in token order


def sample(logits: Array, temperature: Array, top_k: Array, top_p: Array, keys: Array) -> tuple[Array, Array]:
    """Choose one token per row. logits: [B, V] (f32); temperature, top_k, top_p: [B]; keys: [B, 2].
    Returns (tokens [B] int32, model log-probabilities of those tokens [B]).

    A batch of greedy rows skips drawing, and a batch without top-k / top-p skips the filter: sorting a
    large vocabulary for every row costs more than the model's step on CPU."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, V]
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    sampled = temperature > 0

    def draw() -> Array:
        scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
        needs_filter = jnp.any(sampled & ((top_k > 0) | (top_p < 1)))
        filtered = jax.lax.cond(needs_filter, lambda: filter_logits(scaled, top_k, top_p), lambda: scaled)
        drawn = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
        return jnp.where(sampled, drawn, greedy)

    tokens = jax.lax.cond(jnp.any(sampled), draw, lambda: greedy)
    return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]


def top_alternatives(logprobs: Array, k: int, sharding: NamedSharding) -> tuple[Array, Array]:
    """``lax.top_k(logprobs, k)`` for rows [R, V] laid out by ``sharding`` (rows over ``data``, the
    vocabulary maybe over ``tensor``): each device takes the top k of its own rows and vocabulary
    shard, then the shards' candidates are merged (ties to the lower index, as ``lax.top_k``). The
    partitioner would instead gather the whole operand of XLA's TopK onto every device."""
    rows, vocab = (*sharding.spec, None, None)[:2]  # mesh axes of each (None: not split)

    def local(x: Array) -> tuple[Array, Array]:  # [R / data, V / tensor]
        values, indices = jax.lax.top_k(x, k)
        if vocab is None:
            return values, indices
        indices = indices + jax.lax.axis_index(vocab) * x.shape[-1]  # into the whole vocabulary
        values = jax.lax.all_gather(values, vocab, axis=1, tiled=True)  # [R / data, shards * k]
        indices = jax.lax.all_gather(indices, vocab, axis=1, tiled=True)
        values, best = jax.lax.top_k(values, k)
        return values, jnp.take_along_axis(indices, best, axis=1)

    out = PartitionSpec(rows)
    merged: tuple[Array, Array] = jax.shard_map(
        local,
        mesh=sharding.mesh,
        in_specs=PartitionSpec(rows, vocab),
        out_specs=(out, out),
        check_vma=False,  # the merge is the same on every vocabulary shard: gathered, then top k
    )(logprobs)
    return merged


def batch_arrays(params: list[SamplingParams]) -> tuple[Array, Array, Array]:
    """The per-row arrays ``sample`` takes, from each slot's settings."""
    return (
        jnp.asarray([p.temperature for p in params], jnp.float32),
        jnp.asarray([p.top_k for p in params], jnp.int32),
        jnp.asarray([p.top_p for p in params], jnp.float32),
    )
