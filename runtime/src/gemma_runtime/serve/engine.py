"""The decode engine: a preallocated KV cache with one slot per concurrent sequence, and one jitted step
that generates a token for every decoding slot while prefilling chunks packed from up to
``max_segments`` prompts.

The interface is JetStream's, with prefill folded into the step so prompt chunks ride with the decode
tokens: ``insert(slot)`` claims a slot for a new sequence, ``step(work)`` runs the model once and samples,
``prefill`` is a chunk in ``work``. Everything here is static-shaped: a step's chunk length is one of a
few buckets (powers of two up to ``max_prefill``), so steady state never recompiles; ``warm_up`` compiles
every bucket before the server reports ready. The scheduler (host only) decides what goes in each step.

The engine runs on a ``data`` x ``tensor`` mesh of the host's devices (``layout.py``). Tensor
parallelism is the weights' and cache's sharding over heads, FFN and vocabulary; the partitioner splits
the products. Data parallelism is explicit: slots are split into ``shards`` equal groups, every per-step
array carries a leading [data] axis sharded over ``data``, and the per-shard forward is vmapped over it,
so each data replica computes only its own slots' decode rows and its own prompt chunk, against its own
part of the cache, with no communication. Each shard has its own chunk (of one common bucket length)
and its own ``max_segments`` and ``max_prefill`` budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import DTypeLike

from gemma_runtime import memory
from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.model.attention import LayerCache, init_layer_cache
from gemma_runtime.model.matmul import Int8
from gemma_runtime.serve.forward import Placement, StepTokens, forward
from gemma_runtime.serve.interface import TOP_LOGPROBS, Chunk, StepResult, StepWork
from gemma_runtime.serve.layout import (
    cache_shardings,
    check_mesh,
    logits_sharding,
    placement,
    serving_mesh,
    shard_rows,
    weight_shardings,
)
from gemma_runtime.serve.sampling import sample, top_alternatives
from gemma_runtime.serve.weights import Weights, bytes_per_device, extract, weight_bytes

Array = jax.Array
Sampling = tuple[Array, Array, Array, Array, Array]  # temperature, top_k, top_p, seeds, counters
log = logging.getLogger(__name__)


def buckets(max_prefill: int, smallest: int = 16) -> tuple[int, ...]:
    """Chunk lengths compiled: powers of two from ``smallest`` up to ``max_prefill`` (always included)."""
    sizes, size = [], smallest
    while size < max_prefill:
        sizes.append(size)
        size *= 2
    return (*sizes, max_prefill)


def kv_cache_bytes(config: TransformerConfig, slots: int, max_len: int, itemsize: int, ring: bool) -> int:
    """Bytes of keys and values for ``slots`` sequences of ``max_len`` (positions not counted), by the
    memory model; ``ring`` False gives what a full-length cache on every layer would take."""
    dtype: memory.Dtype = "bfloat16" if itemsize == 2 else "float32"
    return slots * memory.kv_bytes_per_slot(config, max_len, dtype, 1, ring=ring, positions=False)


class ModelEngine:
    """The JAX engine over serving weights (optionally int8) already laid out on ``mesh`` per
    :func:`~gemma_runtime.serve.layout.weight_shardings`.

    ``max_segments`` > 1 lets short prompts share a step's chunk, but every chunk token then scores
    against that many cache rows: on CPU (bench-small, 32 slots, a 128-token chunk) 4 segments made a
    chunk step 37 % slower, for 2 % fewer steps on the benchmark's mixed workload. Hence 1 by default."""

    def __init__(
        self,
        config: TransformerConfig,
        weights: Weights,
        *,
        dtype: DTypeLike,
        mesh: Mesh,
        slots: int,
        max_len: int,
        max_prefill: int,
        max_segments: int = 1,
    ) -> None:
        check_mesh(config, mesh, slots)
        if max_prefill > max_len:
            raise ValueError(f"max_prefill {max_prefill} exceeds max_len {max_len}")
        self.config, self.mesh = config, mesh
        self.shards = mesh.shape["data"]
        self.slots, self.max_len, self.max_prefill = slots, max_len, max_prefill
        self.local = slots // self.shards  # slots per data shard
        self.max_segments = max(1, min(max_segments, self.local))
        self.vocab_size = config.vocab_size
        self.dtype = jnp.dtype(dtype)
        self.buckets = buckets(max_prefill)
        self.warm_up_seconds: float | None = None  # set by warm_up, shown in /metrics
        quantization = "int8" if isinstance(weights.embedding, Int8) else "none"
        placed = weight_shardings(config, mesh, quantization)
        self.weights: Weights = jax.device_put(weights, placed)  # a no-op when already laid out
        caches = cache_shardings(config, mesh)
        self.cache: list[LayerCache] = jax.jit(self._empty_cache, out_shardings=caches)()
        self._step = jit_step(config, mesh, self.dtype, quantization)
        self._reset = jax.jit(
            functools.partial(_reset_row),  # its own function: jit shares one function's cache across engines
            in_shardings=(caches, shard_rows(mesh)),
            out_shardings=caches,
            donate_argnums=(0,),
        )
        log.info(
            "engine: %d slots x %d tokens on %s, weights %.1f MB, KV cache %.1f MB (%.1f MB without rings)",
            slots,
            max_len,
            dict(mesh.shape),
            weight_bytes(self.weights) / 1e6,
            self.kv_bytes(ring=True) / 1e6,
            self.kv_bytes(ring=False) / 1e6,
        )

    @classmethod
    def from_model(
        cls, model: Transformer, *, mesh: Mesh | None = None, quantization: str = "none", **limits: int
    ) -> ModelEngine:
        """An engine over a model's weights, placed on ``mesh`` (default: the first device alone)."""
        mesh = mesh if mesh is not None else serving_mesh(1, 1, jax.devices()[:1])
        shardings = weight_shardings(model.config, mesh, quantization)
        weights = jax.device_put(extract(model, quantization), shardings)
        return cls(model.config, weights, dtype=model.dtype, mesh=mesh, **limits)

    def _empty_cache(self) -> list[LayerCache]:
        return empty_cache(self.config, self.slots, self.shards, self.max_len, self.dtype)

    def kv_bytes(self, *, ring: bool = True) -> int:
        """Keys and values of every slot, over all devices."""
        itemsize = jnp.dtype(self.dtype).itemsize
        return kv_cache_bytes(self.config, self.slots, self.max_len, itemsize, ring)

    def device_memory(self) -> tuple[dict[str, int], int, int]:
        """(mesh shape, bytes of weights, bytes of KV cache) on the most loaded device, as placed."""
        return dict(self.mesh.shape), bytes_per_device(self.weights), bytes_per_device(self.cache)

    def insert(self, slot: int) -> None:
        rows = np.full(self.shards, self.local, np.int32)  # out of range: nothing reset on that shard
        rows[slot // self.local] = slot % self.local
        self.cache = self._reset(self.cache, rows)

    def step(self, work: StepWork) -> StepResult:
        d, local = self.shards, self.local
        per_shard: list[list[Chunk]] = [[] for _ in range(d)]
        for chunk in work.chunks:
            per_shard[chunk.slot // local].append(chunk)
        if any(len(chunks) > self.max_segments for chunks in per_shard):
            raise ValueError(f"a step holds at most {self.max_segments} chunks per data shard")
        p = self.max_segments if work.chunks else 0  # no chunk, no segment rows: logits at M = B
        n = max(sum(len(chunk.tokens) for chunk in chunks) for chunks in per_shard)
        size = next(b for b in self.buckets if b >= n) if n else 0
        chunk_tokens = np.zeros((d, size), np.int32)
        chunk_positions = np.full((d, size), -1, np.int32)
        chunk_segments = np.zeros((d, size), np.int32)
        segment_slots = np.zeros((d, p), np.int32)  # slots local to the shard
        last_rows = np.zeros((d, p), np.int32)
        for shard, chunks in enumerate(per_shard):
            offset = 0
            for index, chunk in enumerate(chunks):
                end = offset + len(chunk.tokens)
                chunk_tokens[shard, offset:end] = chunk.tokens
                chunk_positions[shard, offset:end] = np.arange(chunk.start, chunk.start + len(chunk.tokens))
                chunk_segments[shard, offset:end] = index
                segment_slots[shard, index], last_rows[shard, index] = chunk.slot % local, end - 1
                offset = end
        by_shard = functools.partial(np.reshape, shape=(d, local))  # [B] -> [data, B / data]
        tokens = StepTokens._make(
            (
                by_shard(np.asarray(work.tokens, np.int32)),
                by_shard(np.asarray(work.positions, np.int32)),
                chunk_tokens,
                chunk_positions,
                chunk_segments,
                segment_slots,
            )
        )
        sampling = (
            by_shard(np.asarray(work.temperature, np.float32)),
            by_shard(np.asarray(work.top_k, np.int32)),
            by_shard(np.asarray(work.top_p, np.float32)),
            by_shard(np.asarray(work.seeds, np.uint32)),
            by_shard(np.asarray(work.counters, np.int32)),
        )
        out, self.cache = self._step(self.weights, self.cache, tokens, last_rows, sampling)
        arrays = [np.asarray(a) for a in out]  # [data, B / data + P, ...] each
        merged = [np.array(a[:, :local]).reshape(self.slots, *a.shape[2:]) for a in arrays]  # [B, ...]
        for shard, chunks in enumerate(per_shard):  # row B / data + i answers for segment i's slot
            for index, chunk in enumerate(chunks):
                for whole, array in zip(merged, arrays, strict=True):
                    whole[chunk.slot] = array[shard, local + index]
        return StepResult(*merged)

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
        self.warm_up_seconds = time.monotonic() - started
        return self.warm_up_seconds


def empty_cache(
    config: TransformerConfig, slots: int, shards: int, max_len: int, dtype: DTypeLike
) -> list[LayerCache]:
    """Every layer's cache with the leading [data] axis: [data, slots / data, S, K, H]."""
    sources = config.kv_sources  # a KV-shared layer's cache is empty: it reads its source's
    empty = [
        init_layer_cache(config, t, slots, max_len if sources[i] is None else 0, jnp.dtype(dtype))
        for i, t in enumerate(config.attention_types)
    ]
    by_shard: list[LayerCache] = jax.tree.map(
        lambda a: a.reshape(shards, slots // shards, *a.shape[1:]), empty
    )
    return by_shard


def jit_step(config: TransformerConfig, mesh: Mesh, dtype: DTypeLike, quantization: str = "none") -> Any:
    """The engine's step jitted for ``mesh``: weights and cache in their shardings (the cache donated),
    per-step inputs and outputs [data, ...] by data shard. ``gemma_runtime.plan`` compiles this same
    function for TPU slices."""
    rows = shard_rows(mesh)
    caches = cache_shardings(config, mesh)
    tokens = StepTokens._make([rows] * len(StepTokens._fields))
    step = functools.partial(
        _step, config=config, dtype=jnp.dtype(dtype), placement=placement(config, mesh), mesh=mesh
    )
    return jax.jit(
        step,
        in_shardings=(weight_shardings(config, mesh, quantization), caches, tokens, rows, (rows,) * 5),
        out_shardings=((rows,) * 4, caches),
        donate_argnums=(1,),
    )


def step_inputs(mesh: Mesh, slots: int, chunk: int, segments: int) -> tuple[Any, Any, Any]:
    """Shapes, dtypes and shardings of a step's (tokens, chunk rows, sampling) as ``ModelEngine.step``
    passes them: ``chunk`` tokens of prompt (a bucket, 0 for decode only) in ``segments`` pieces (0 for
    decode only) per data shard."""
    rows = shard_rows(mesh)
    data = mesh.shape["data"]

    def shaped(width: int, dtype: DTypeLike) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((data, width), jnp.dtype(dtype), sharding=rows)

    local = slots // data
    widths = (local, local, chunk, chunk, chunk, segments)  # StepTokens' fields, all int32
    tokens = StepTokens._make(shaped(width, jnp.int32) for width in widths)
    sampling = tuple(shaped(local, d) for d in (jnp.float32, jnp.int32, jnp.float32, jnp.uint32, jnp.int32))
    return tokens, shaped(segments, jnp.int32), sampling


def _per_shard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` over the leading [data] axis of its arguments and results: vmapped, each shard's rows are
    a batch that the partitioner splits over ``data`` without communication (constraints inside keep
    that axis on ``data``). One shard is vmapped too: slicing the axis off and adding it back made
    XLA:CPU copy every layer's cache in every step, where the vmapped step is the unbatched one's
    program."""
    return jax.vmap(fn, spmd_axis_name="data")


def _reset_row(cache: list[LayerCache], rows: Array) -> list[LayerCache]:
    """Mark every entry of one slot per shard empty (``rows`` [data], a local slot or out of range for
    none; keys and values stay, nothing attends to position -1)."""

    def reset(cache: list[LayerCache], row: Array) -> list[LayerCache]:
        return [{**layer, "pos": layer["pos"].at[row].set(-1, mode="drop")} for layer in cache]

    return _per_shard(reset)(cache, rows)  # type: ignore[no-any-return]


def _step(
    weights: Weights,
    cache: list[LayerCache],
    tokens: StepTokens,
    chunk_rows: Array,
    sampling: Sampling,
    *,
    config: TransformerConfig,
    dtype: jnp.dtype,
    placement: Placement,
    mesh: Mesh,
) -> tuple[tuple[Array, Array, Array, Array], list[LayerCache]]:
    """Forward on each data shard, then sample every row ([data, B / data + P]: the shard's slots, then
    each of its segments' last token, which uses its slot's settings)."""

    def shard_forward(cache: list[LayerCache], tokens: StepTokens, chunk_rows: Array) -> Any:
        return forward(
            config, weights, cache, tokens, chunk_rows=chunk_rows, dtype=dtype, placement=placement
        )

    # Expert parallelism: the mixture of experts maps itself over the mesh being traced for. Only then:
    # with every step traced under it, four v5p steps of the tpu tier lowered differently after the
    # tier's other cells in one process than each alone (cause not isolated); without, as before.
    parallel = "expert" in mesh.axis_names
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh) if parallel else contextlib.nullcontext():
        logits, cache = _per_shard(shard_forward)(cache, tokens, chunk_rows)  # [data, L, V]
    rows = logits.shape[:2]
    settings = [
        jnp.concatenate([a, jnp.take_along_axis(a, tokens.segment_slots, axis=1)], axis=1).reshape(-1)
        for a in sampling
    ]
    # Sampled over every shard's rows at once (rows are independent): vmapped, sample's shortcuts for
    # an all-greedy batch would turn into computing both branches.
    temperature, top_k, top_p, seeds, counters = settings
    flat = logits.reshape(-1, logits.shape[-1])  # [data * L, V]
    keys = jax.vmap(lambda s, c: jax.random.fold_in(jax.random.PRNGKey(s), c))(seeds, counters)
    chosen, logprob = sample(flat, temperature, top_k, top_p, keys)
    layout = logits_sharding(config, mesh, flat.shape[0])
    top_logprobs, top_tokens = top_alternatives(jax.nn.log_softmax(flat, axis=-1), TOP_LOGPROBS, layout)
    out = (chosen, logprob, top_tokens, top_logprobs)
    return tuple(a.reshape(*rows, *a.shape[1:]) for a in out), cache  # type: ignore[return-value]
