"""The decode engine: a preallocated KV cache with one slot per concurrent sequence, and one jitted step
that generates a token for every decoding slot while prefilling a chunk packed from up to
``max_segments`` prompts.

The interface is JetStream's, with prefill folded into the step so prompt chunks ride with the decode
tokens: ``insert(slot)`` claims a slot for a new sequence, ``step(work)`` runs the model once and samples,
``prefill`` is a chunk in ``work``. Everything here is static-shaped: a step's chunk length is one of a
few buckets (powers of two up to ``max_prefill``), so steady state never recompiles; ``warm_up`` compiles
every bucket before the server reports ready. The scheduler (host only) decides what goes in each step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.model.attention import LayerCache, cache_slots, init_layer_cache
from gemma_runtime.serve.forward import StepTokens, forward
from gemma_runtime.serve.interface import TOP_LOGPROBS, Chunk, StepResult, StepWork
from gemma_runtime.serve.sampling import sample
from gemma_runtime.serve.weights import Weights, extract, weight_bytes

Array = jax.Array
log = logging.getLogger(__name__)


def buckets(max_prefill: int, smallest: int = 16) -> tuple[int, ...]:
    """Chunk lengths compiled: powers of two from ``smallest`` up to ``max_prefill`` (always included)."""
    sizes, size = [], smallest
    while size < max_prefill:
        sizes.append(size)
        size *= 2
    return (*sizes, max_prefill)


def kv_cache_bytes(config: TransformerConfig, slots: int, max_len: int, itemsize: int, ring: bool) -> int:
    """Bytes of keys and values for ``slots`` sequences of ``max_len`` (positions not counted); ``ring``
    False gives what a full-length cache on every layer would take."""
    per_position = 2 * config.num_kv_heads * config.head_dim * itemsize
    lengths = [cache_slots(config, t, max_len) if ring else max_len for t in config.attention_types]
    return slots * per_position * sum(lengths)


class ModelEngine:
    """The JAX engine over a :class:`Transformer`'s weights (optionally int8).

    ``max_segments`` > 1 lets short prompts share a step's chunk, but every chunk token then scores
    against that many cache rows: on CPU (bench-small, 32 slots, a 128-token chunk) 4 segments made a
    chunk step 37 % slower, for 2 % fewer steps on the benchmark's mixed workload. Hence 1 by default."""

    def __init__(
        self,
        model: Transformer,
        *,
        slots: int,
        max_len: int,
        max_prefill: int,
        max_segments: int = 1,
        quantization: str = "none",
    ) -> None:
        config = model.config
        if max_prefill > max_len:
            raise ValueError(f"max_prefill {max_prefill} exceeds max_len {max_len}")
        self.config = config
        self.slots, self.max_len, self.max_prefill = slots, max_len, max_prefill
        self.max_segments = max(1, min(max_segments, slots))
        self.vocab_size = config.vocab_size
        self.dtype = model.dtype
        self.buckets = buckets(max_prefill)
        self.weights: Weights = extract(model, quantization)
        self.cache: list[LayerCache] = [
            init_layer_cache(config, t, slots, max_len, self.dtype) for t in config.attention_types
        ]
        self._step = jax.jit(functools.partial(_step, config, self.dtype), donate_argnames=("cache",))
        self._reset = jax.jit(_reset_slot, donate_argnums=(0,))
        log.info(
            "engine: %d slots x %d tokens, weights %.1f MB, KV cache %.1f MB (%.1f MB without rings)",
            slots,
            max_len,
            weight_bytes(self.weights) / 1e6,
            self.kv_bytes(ring=True) / 1e6,
            self.kv_bytes(ring=False) / 1e6,
        )

    def kv_bytes(self, *, ring: bool = True) -> int:
        itemsize = jnp.dtype(self.dtype).itemsize
        return kv_cache_bytes(self.config, self.slots, self.max_len, itemsize, ring)

    def insert(self, slot: int) -> None:
        self.cache = self._reset(self.cache, jnp.int32(slot))

    def step(self, work: StepWork) -> StepResult:
        p = self.max_segments if work.chunks else 0  # no chunk, no segment rows: logits at M = B
        n = sum(len(chunk.tokens) for chunk in work.chunks)
        size = next(b for b in self.buckets if b >= n) if n else 0
        chunk_tokens = np.zeros(size, np.int32)
        chunk_positions = np.full(size, -1, np.int32)
        chunk_segments = np.zeros(size, np.int32)
        segment_slots = np.zeros(p, np.int32)
        last_rows = np.zeros(p, np.int32)
        offset = 0
        for index, chunk in enumerate(work.chunks):
            end = offset + len(chunk.tokens)
            chunk_tokens[offset:end] = chunk.tokens
            chunk_positions[offset:end] = np.arange(chunk.start, chunk.start + len(chunk.tokens))
            chunk_segments[offset:end] = index
            segment_slots[index], last_rows[index] = chunk.slot, end - 1
            offset = end
        tokens = StepTokens(
            jnp.asarray(work.tokens, jnp.int32),
            jnp.asarray(work.positions, jnp.int32),
            jnp.asarray(chunk_tokens),
            jnp.asarray(chunk_positions),
            jnp.asarray(chunk_segments),
            jnp.asarray(segment_slots),
        )
        sampling = (
            jnp.asarray(work.temperature, jnp.float32),
            jnp.asarray(work.top_k, jnp.int32),
            jnp.asarray(work.top_p, jnp.float32),
            jnp.asarray(work.seeds, jnp.uint32),
            jnp.asarray(work.counters, jnp.int32),
        )
        out, self.cache = self._step(
            weights=self.weights,
            cache=self.cache,
            tokens=tokens,
            chunk_rows=jnp.asarray(last_rows),
            sampling=sampling,
        )
        arrays = [np.array(a) for a in out]  # [B + P, ...] each, writable copies
        for index, chunk in enumerate(work.chunks):  # row B + i answers for segment i's slot
            for array in arrays:
                array[chunk.slot] = array[self.slots + index]
        return StepResult(*(a[: self.slots] for a in arrays))

    def warm_up(self) -> float:
        """Compile every step shape (decode only, and each chunk bucket); returns the seconds taken.
        The cache is reset afterwards."""
        started = time.monotonic()
        idle = StepWork(
            tokens=np.zeros(self.slots, np.int32),
            positions=np.full(self.slots, -1, np.int32),
            temperature=np.zeros(self.slots, np.float32),
            top_k=np.zeros(self.slots, np.int32),
            top_p=np.ones(self.slots, np.float32),
            seeds=np.zeros(self.slots, np.uint32),
            counters=np.zeros(self.slots, np.int32),
        )
        self.step(idle)
        for size in self.buckets:
            self.step(dataclasses.replace(idle, chunks=[Chunk(0, [0] * size, 0, True)]))
        for slot in range(self.slots):
            self.insert(slot)
        return time.monotonic() - started


def _reset_slot(cache: list[LayerCache], slot: Array) -> list[LayerCache]:
    """Mark every entry of one slot empty (keys and values stay; nothing attends to position -1)."""
    return [{**layer, "pos": layer["pos"].at[slot].set(-1)} for layer in cache]


def _step(
    config: TransformerConfig,
    dtype: jnp.dtype,
    *,
    weights: Weights,
    cache: list[LayerCache],
    tokens: StepTokens,
    chunk_rows: Array,
    sampling: tuple[Array, Array, Array, Array, Array],
) -> tuple[tuple[Array, Array, Array, Array], list[LayerCache]]:
    """Forward, then sample every row ([B + P]: the slots, then each segment's last token, which uses
    its slot's settings)."""
    logits, cache = forward(config, weights, cache, tokens, chunk_rows=chunk_rows, dtype=dtype)
    temperature, top_k, top_p, seeds, counters = (
        jnp.concatenate([a, a[tokens.segment_slots]]) for a in sampling
    )
    keys = jax.vmap(lambda s, c: jax.random.fold_in(jax.random.PRNGKey(s), c))(seeds, counters)
    chosen, logprob = sample(logits, temperature, top_k, top_p, keys)
    top_logprobs, top_tokens = jax.lax.top_k(jax.nn.log_softmax(logits, axis=-1), TOP_LOGPROBS)
    return (chosen, logprob, top_tokens.astype(jnp.int32), top_logprobs), cache
