"""The serving engine's view of a model's parameters: a plain pytree of per-layer arrays (separate arrays
per layer: indexing a stacked ``[layers, ...]`` array inside a jitted step copies it every step on CPU),
optionally with int8 weights.

int8 is weight-only, symmetric, one scale per output channel (the maximum absolute value over the
contracted axes / 127). Norm scales stay in full precision. The matrix product runs on the int8 values
converted to the activation dtype and multiplies the scale into its output, which is exact per channel.
GPU and TPU compilers fuse that conversion into the product. XLA:CPU runs the fused product as a slow
loop (measured 14x slower than f32 at batch 1), so on CPU the weight is converted one block of rows at a
time inside a loop: each block's f32 copy stays in cache and the product runs at full speed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gemma_runtime.model import Transformer

Array = jax.Array


class Int8(NamedTuple):
    """A quantized weight: ``values`` int8 in the weight's shape; ``scale`` f32 in the shape of the
    weight's output (not contracted) axes, which trail the product's output."""

    values: Array
    scale: Array


Weight = Array | Int8
LayerWeights = dict[str, Any]  # q, k, v [D, N*H], o [N*H, D], gate, up, down: Weight; norm scales


class Weights(NamedTuple):
    embedding: Weight  # [V, D]
    layers: list[LayerWeights]
    final_norm: Array  # [D]


def quantize(weight: Array, contracted: tuple[int, ...]) -> Int8:
    """Per-channel symmetric int8: one scale for every index of the axes not in ``contracted``."""
    w = weight.astype(jnp.float32)
    peak = jnp.max(jnp.abs(w), axis=contracted, keepdims=True)
    scale = jnp.where(peak > 0, peak / 127.0, 1.0)
    values = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
    kept = tuple(n for i, n in enumerate(weight.shape) if i not in contracted)
    return Int8(values, scale.reshape(kept))


# Rows of an int8 weight converted at a time on CPU: 1M values (4 MB as f32) fit in cache.
_BLOCK_VALUES = 1 << 20


def _row_blocks(weight: Array) -> int:
    """The fewest blocks of whole rows, dividing the rows evenly, of at most ``_BLOCK_VALUES`` each, and
    at least two: converted outside a loop, every layer's weights would be converted up front into one
    large temporary (measured 6x slower for bench-small's attention projections)."""
    rows = weight.shape[0]
    blocks = min(max(2, -(-weight.size // _BLOCK_VALUES)), rows)
    while rows % blocks:  # ends at the latest with one row a block
        blocks += 1
    return blocks


def _blocked_product(x: Array, values: Array, spec: str) -> Array:
    """``einsum(spec, x, values)`` for a 2-D int8 ``values``, converting one block of rows at a time."""
    blocks = _row_blocks(values)
    stacked = values.reshape(blocks, values.shape[0] // blocks, values.shape[1])
    inputs, _ = spec.split("->")
    contracted = inputs.split(",")[1][0] in inputs.split(",")[0]
    if contracted:  # [K, N]: each block is a slice of K, the partial products add up
        size = stacked.shape[1]

        def add(total: Array, i: Array) -> tuple[Array, None]:
            part = jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=-1)
            return total + jnp.einsum(spec, part, stacked[i].astype(x.dtype)), None

        shape = (*x.shape[:-1], values.shape[1])
        total, _ = jax.lax.scan(add, jnp.zeros(shape, x.dtype), jnp.arange(blocks))
        return total

    def rows(_: None, block: Array) -> tuple[None, Array]:  # [N, K]: each block is a slice of the output
        return None, jnp.einsum(spec, x, block.astype(x.dtype))

    _, parts = jax.lax.scan(rows, None, stacked)  # [blocks, ..., N / blocks]
    return jnp.moveaxis(parts, 0, -2).reshape(*x.shape[:-1], values.shape[0])


def project(x: Array, weight: Weight, spec: str) -> Array:
    """``einsum(spec, x, weight)`` for a full-precision or an int8 weight."""
    if isinstance(weight, Int8):
        if jax.default_backend() == "cpu" and weight.values.ndim == 2:
            out = _blocked_product(x, weight.values, spec)
        else:
            out = jnp.einsum(spec, x, weight.values.astype(x.dtype))
        return out * weight.scale.astype(x.dtype)
    return jnp.einsum(spec, x, weight.astype(x.dtype))


def embed(table: Weight, tokens: Array, dtype: jnp.dtype) -> Array:
    """Rows of the [V, D] table for ``tokens`` [...] -> [..., D] (not yet scaled by sqrt(D))."""
    if isinstance(table, Int8):
        rows = jnp.take(table.values, tokens, axis=0).astype(dtype)
        return rows * jnp.take(table.scale, tokens, axis=0)[..., None].astype(dtype)
    return jnp.take(table, tokens, axis=0).astype(dtype)


# Every projection is stored as a plain [in, out] matrix, contracted on axis 0: q/k/v as [D, N*H] (heads
# flattened after moving D first), o as [N*H, D]. Left as [N, D, H] XLA:CPU transposes q and o in every
# step (a copy of the weight per token); the embedding [V, D] contracts D as the output projection.
_CONTRACTED = {"q": (0,), "k": (0,), "v": (0,), "o": (0,), "gate": (0,), "up": (0,), "down": (0,)}


def _heads_last(weight: Array) -> Array:
    """[N, D, H] -> [D, N*H]."""
    n, d, h = weight.shape
    return jnp.transpose(weight, (1, 0, 2)).reshape(d, n * h)


def _value(module: Any, name: str) -> Array | None:
    """A submodule's norm scale, or None when the block has no such norm."""
    norm = getattr(module, name, None)
    return None if norm is None else norm.scale[...]


def extract(model: Transformer, quantization: str = "none") -> Weights:
    """The model's parameters as a :class:`Weights` pytree; ``quantization`` is "none" or "int8"."""
    if quantization not in ("none", "int8"):
        raise ValueError(f"quantization must be 'none' or 'int8', got {quantization!r}")
    int8 = quantization == "int8"

    def matrix(value: Array, name: str) -> Weight:
        return quantize(value, _CONTRACTED[name]) if int8 else value

    layers: list[LayerWeights] = []
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        layer: LayerWeights = {
            "q": matrix(_heads_last(attn.q[...]), "q"),
            "k": matrix(_heads_last(attn.k[...]), "k"),
            "v": matrix(_heads_last(attn.v[...]), "v"),
            "o": matrix(attn.o[...].reshape(-1, attn.o.shape[-1]), "o"),
            "gate": matrix(mlp.gate[...], "gate"),
            "up": matrix(mlp.up[...], "up"),
            "down": matrix(mlp.down[...], "down"),
            "pre_attention_norm": _value(block, "pre_attention_norm"),
            "post_attention_norm": _value(block, "post_attention_norm"),
            "pre_ffw_norm": _value(block, "pre_ffw_norm"),
            "post_ffw_norm": _value(block, "post_ffw_norm"),
            "query_norm": _value(attn, "query_norm"),
            "key_norm": _value(attn, "key_norm"),
        }
        layers.append(layer)
    table = model.embedder.input_embedding[...]
    embedding = quantize(table, (1,)) if int8 else table
    return Weights(embedding, layers, model.final_norm.scale[...])


def weight_bytes(weights: Weights) -> int:
    """Bytes of every array in the pytree (what one decode step reads, the embedding once)."""
    return sum(int(leaf.size) * leaf.dtype.itemsize for leaf in jax.tree.leaves(weights))
