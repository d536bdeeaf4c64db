"""The serving engine's real step, compiled for one host of a TPU slice without weights.

The model is built abstractly (``jax.eval_shape`` of the engine's own weight extraction: shapes, no
memory), laid out by ``serve.layout`` (the one logical-axis table), and the engine's jitted step
(``serve.engine.jit_step``: weights, the donated KV cache, the step's token and sampling inputs) is lowered
with abstract sharded inputs for every chunk bucket the engine's warm-up compiles (decode only, then each
bucket), exactly as ``ModelEngine.warm_up`` would on the host.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.plan.compiled import Program, compile_all
from gemma_runtime.serve.engine import buckets, empty_cache, jit_step, step_inputs
from gemma_runtime.serve.layout import cache_shardings, check_mesh, serving_mesh, weight_shardings
from gemma_runtime.serve.weights import extract


@dataclasses.dataclass(frozen=True)
class ServingStep:
    """One serving layout to compile: the model, its dtype and weights, the mesh and the engine's limits."""

    config: TransformerConfig
    dtype: str  # "bfloat16" or "float32"
    quantization: str  # "none" or "int8"
    data: int
    tensor: int
    slots: int
    max_len: int
    max_prefill: int
    max_segments: int = 1
    expert: int = 1

    @property
    def buckets(self) -> tuple[int, ...]:
        return buckets(self.max_prefill)


def _with(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)


def abstract_weights(step: ServingStep, mesh: Any) -> Any:
    """The serving weights' shapes and shardings: ``serve.weights.extract`` of a model built abstractly."""
    dtype = jnp.dtype(step.dtype)

    def build() -> Any:
        model = Transformer(step.config, rngs=nnx.Rngs(0), param_dtype=dtype, dtype=dtype)
        return extract(model, step.quantization)

    return _with(jax.eval_shape(build), weight_shardings(step.config, mesh, step.quantization))


def abstract_cache(step: ServingStep, mesh: Any) -> Any:
    make = functools.partial(empty_cache, step.config, step.slots, step.data, step.max_len, step.dtype)
    return _with(jax.eval_shape(make), cache_shardings(step.config, mesh))


def lower(
    step: ServingStep, devices: list[Any], chunks: tuple[int, ...] | None = None
) -> list[tuple[str, Any]]:
    """The step lowered for each chunk length in ``chunks`` (0: decode only; default: every program the
    engine's warm-up compiles), named "decode" or "chunk N"."""
    mesh = serving_mesh(step.data, step.tensor, devices, step.expert)
    check_mesh(step.config, mesh, step.slots)
    jitted = jit_step(step.config, mesh, step.dtype, step.quantization)
    weights, cache = abstract_weights(step, mesh), abstract_cache(step, mesh)
    segments = max(1, min(step.max_segments, step.slots // step.data))
    lowered = []
    for chunk in (0, *step.buckets) if chunks is None else chunks:
        tokens, rows, sampling = step_inputs(mesh, step.slots, chunk, segments if chunk else 0)
        name = f"chunk {chunk}" if chunk else "decode"
        lowered.append((name, jitted.lower(weights, cache, tokens, rows, sampling)))
    return lowered


def compile_step(
    step: ServingStep, devices: list[Any], chunks: tuple[int, ...] | None = None, workers: int | None = None
) -> list[Program]:
    return compile_all(lower(step, devices, chunks), workers)


def model_flops(step: ServingStep, chunk: int) -> float:
    """The useful FLOPs of one step over the whole host: every slot decodes one token against a full
    cache, and a ``chunk`` of prompt attends over its slot's full cache and itself; logits for the decode
    rows and each segment's last token. Matrix products count 2 FLOPs per weight per token."""
    config = step.config
    segments = max(1, min(step.max_segments, step.slots // step.data)) * step.data if chunk else 0
    chunk_tokens = chunk * step.data
    d, v = config.embed_dim, config.vocab_size
    body = config.matmul_flops_per_token() - 2 * v * d  # the layers' products, without the logits
    products = body * (step.slots + chunk_tokens) + 2 * v * d * (step.slots + segments)
    context = 0
    for kind in config.attention_types:
        window = config.sliding_window if kind.value == "local_sliding" and config.sliding_window else None
        context += min(window, step.max_len) if window else step.max_len
    heads = 4 * config.num_heads * config.head_dim  # q.k and p.v, 2 FLOPs each
    attention = heads * (step.slots * context + chunk_tokens * (context + chunk * config.num_layers))
    return float(products + attention)
