"""The model's one matrix product, ``project``, for a full-precision weight or an int8 one (``Int8``:
values and a per-channel scale, as serving quantizes them in ``serve/weights.py``), and the embedding
lookup that reads a table of either kind.

The int8 product runs on the values converted to the activation dtype and multiplies the scale into its
output, which is exact per channel. GPU and TPU compilers fuse that conversion into the product. XLA:CPU
runs the fused product as a slow loop (measured 14x slower than f32 at batch 1), so on CPU the weight is
converted one block of rows at a time inside a loop: each block's f32 copy stays in cache and the product
runs at full speed.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Int8(NamedTuple):
    """A quantized weight: ``values`` int8 in the weight's shape; ``scale`` f32 in the shape of the
    weight's output (not contracted) axes, which trail the product's output."""

    values: Array
    scale: Array


Weight = Array | Int8


def ndim(weight: Weight) -> int:
    return weight.values.ndim if isinstance(weight, Int8) else weight.ndim


def project(x: Array, weight: Weight, spec: str, row_shards: int = 1, platform: str | None = None) -> Array:
    """``einsum(spec, x, weight)`` for a full-precision or an int8 weight; ``row_shards``: how many
    shards split the weight's first axis (only the CPU int8 product needs to know); ``platform``: the
    devices the step is compiled for (None: JAX's default backend; a TPU plan traces on the CPU)."""
    if isinstance(weight, Int8):
        if (platform or jax.default_backend()) == "cpu" and weight.values.ndim == 2:
            out = _blocked_product(x, weight.values, spec, row_shards)
        else:
            out = jnp.einsum(spec, x, weight.values.astype(x.dtype))
        return out * weight.scale.astype(x.dtype)
    return jnp.einsum(spec, x, weight.astype(x.dtype))


class Products(NamedTuple):
    """How a step's products run, which only the CPU int8 product needs: ``row_shards``, how many
    shards split the first axis of a weight, by name ("o", "down", "embedding"); ``platform``, as for
    :func:`project`. Called like :func:`project`, with the weight's name. ``grouped_experts``: run a
    mixture of experts as grouped products (``ragged_dot``, each token through its own experts only);
    False runs every expert over every token, weighted by the router (zero for the unchosen), which a
    step mapped over shards with ``vmap`` needs (``ragged_dot`` has no batching rule).
    ``token_axes``: the mesh axes a step's token rows are split over where the mixture of experts maps
    itself over the mesh (expert parallelism): None, the logical-axis table's batch axes (training); none
    in serving, whose step is mapped over ``data`` with ``vmap``."""

    row_shards: Mapping[str, int] = types.MappingProxyType({})
    platform: str | None = None
    grouped_experts: bool = True
    token_axes: tuple[str, ...] | None = None

    def __call__(self, x: Array, weight: Weight, spec: str, name: str = "") -> Array:
        return project(x, weight, spec, self.row_shards.get(name, 1), self.platform)


PLAIN = Products()  # one device, JAX's default backend


def take_rows(table: Weight, tokens: Array, dtype: jnp.dtype) -> Array:
    """Rows of a [V, D] table for ``tokens`` [...] -> [..., D], in ``dtype``."""
    if isinstance(table, Int8):
        rows = jnp.take(table.values, tokens, axis=0).astype(dtype)
        return rows * jnp.take(table.scale, tokens, axis=0)[..., None].astype(dtype)
    return jnp.take(table, tokens, axis=0).astype(dtype)


# Rows of an int8 weight converted at a time on CPU: 1M values (4 MB as f32) fit in cache.
_BLOCK_VALUES = 1 << 20


def _row_blocks(weight: Array, groups: int = 1) -> int:
    """The fewest blocks of whole rows, dividing each of ``groups`` equal groups of rows evenly, of at
    most ``_BLOCK_VALUES`` each, and at least two: converted outside a loop, every layer's weights would
    be converted up front into one large temporary (measured 6x slower for bench-small's attention
    projections)."""
    rows, size = weight.shape[0] // groups, weight.size // groups
    blocks = min(max(2, -(-size // _BLOCK_VALUES)), rows)
    while rows % blocks:  # ends at the latest with one row a block
        blocks += 1
    return blocks


def _blocked_product(x: Array, values: Array, spec: str, groups: int) -> Array:
    """``einsum(spec, x, values)`` for a 2-D int8 ``values``, converting one block of rows at a time.

    ``groups`` is how many shards split the rows (tensor parallelism): rows are cut into [groups,
    blocks, size] so that every block lies inside one shard and the loop slices an unsharded axis (a
    block sliced across shards would make the partitioner gather the whole weight onto every device).
    The group axis leads every product's operands and result: anywhere else, XLA:CPU runs the batched
    product over a slow path (measured 13x slower at batch 1, even with one group)."""
    rows, width = values.shape
    groups = groups if rows % groups == 0 else 1
    blocks = _row_blocks(values, groups)
    size = rows // (groups * blocks)
    stacked = values.reshape(groups, blocks, size, width)  # [groups, blocks, size, N or K]
    inputs, _ = spec.split("->")
    lhs, rhs = inputs.split(",")
    g = next(c for c in "ZYXWUQ" if c not in spec)  # a letter for the group axis
    lead = x.shape[:-1]
    if rhs[0] in lhs:  # [K, N]: each block is a slice of K, the partial products add up
        xs = jnp.moveaxis(x.reshape(*lead, groups, blocks, size), -3, 0)  # [groups, ..., blocks, size]
        grouped = f"{g}{lhs},{g}{rhs}->{g}{lhs[:-1]}{rhs[1]}"

        def add(total: Array, i: Array) -> tuple[Array, None]:
            part = jax.lax.dynamic_index_in_dim(xs, i, axis=-2, keepdims=False)  # [groups, ..., size]
            block = jax.lax.dynamic_index_in_dim(stacked, i, axis=1, keepdims=False)  # [groups, size, N]
            return total + jnp.einsum(grouped, part, block.astype(x.dtype)), None

        zeros = jnp.zeros((groups, *lead, width), x.dtype)  # one partial sum per shard
        total, _ = jax.lax.scan(add, zeros, jnp.arange(blocks))  # [groups, ..., N]
        return total.sum(axis=0)

    grouped = f"{lhs},{g}{rhs}->{g}{lhs[:-1]}{rhs[0]}"

    def part(_: None, i: Array) -> tuple[None, Array]:  # [N, K]: each block is a slice of the output
        block = jax.lax.dynamic_index_in_dim(stacked, i, axis=1, keepdims=False)  # [groups, size, K]
        return None, jnp.einsum(grouped, x, block.astype(x.dtype))  # [groups, ..., size]

    _, parts = jax.lax.scan(part, None, jnp.arange(blocks))  # [blocks, groups, ..., size]
    parts = jnp.moveaxis(parts, (1, 0), (-3, -2))  # [..., groups, blocks, size]
    return parts.reshape(*lead, rows)
