"""Where the serving weights and KV cache live on a ``data`` x ``tensor`` mesh of one host's chips.

Every serving weight is named by logical axes and placed by the one logical-axis table that also shards
training (``gemma_runtime.axes``, which lists each weight's axes and shape for the memory model too): query
heads, KV heads, the FFN hidden axis and the vocabulary over ``tensor``; every weight is replicated over
``data`` (which splits the decode slots). A KV-head axis that ``tensor`` does not divide (Gemma 2B and Gemma 3
1B have one KV head) is replicated, as MaxText and JetStream do. The projections are stored as [in, out]
matrices with heads flattened (``weights.py``), so divisibility is checked on heads, never on the flattened
axis: a shard never splits a head.

The KV cache is stored [data, slots / data, S, K, H] (positions [data, slots / data, S]): the leading shard
axis over ``data`` ("batch" in the table), so each data replica holds only its own slots, and KV heads over
``tensor`` like the k and v projections that fill them (replicated where those are).

Gemma 4: global and local layers differ in KV heads and head dim, so units are taken per layer; a layer has no
v where keys double as values; the mixture of experts and the per-layer scalar are laid out by the same table
(the experts over ``expert`` where the mesh has that axis, their hidden axis over ``tensor``, the rest
replicated), and so are the E models' per-layer input table and projection (``Weights.per_layer``). A
KV-shared layer's cache is empty.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding

from gemma_runtime import axes
from gemma_runtime.axes import Axes, WeightShape
from gemma_runtime.model.matmul import Int8
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import named_sharding
from gemma_runtime.serve.forward import Placement
from gemma_runtime.serve.weights import MATRICES, Weights
from gemma_runtime.variants import TransformerConfig

Array = jax.Array


def serving_mesh(data: int, tensor: int, devices: Any, expert: int = 1) -> Mesh:
    """The serving mesh: ``fsdp`` is 1 (every data replica holds the whole model, split over expert x
    tensor)."""
    return make_mesh(data, 1, tensor, devices, expert=expert)


def check_mesh(config: TransformerConfig, mesh: Mesh, slots: int) -> None:
    """Raise ValueError naming the setting when ``slots`` or ``config`` cannot be laid out on ``mesh``."""
    data, fsdp, tensor = (mesh.shape[a] for a in ("data", "fsdp", "tensor"))
    if fsdp != 1:
        raise ValueError(f"a serving mesh keeps fsdp at 1 (every data replica holds the model), got {fsdp}")
    if slots % data:
        raise ValueError(
            f"max_batch_size {slots} is not a multiple of the mesh's data axis ({data}): every data "
            f"shard holds the same number of slots; use a multiple of {data}"
        )
    expert = mesh.shape.get("expert", 1)
    if expert > 1 and (not config.num_experts or config.num_experts % expert):
        experts = f"{config.num_experts} experts" if config.num_experts else "no mixture of experts"
        raise ValueError(
            f"mesh expert={expert}: {config.name} has {experts}; the expert degree must divide the experts "
            "(1 for a model without them)"
        )
    if config.num_heads % tensor:
        raise ValueError(
            f"mesh data={data} x tensor={tensor}: num_heads {config.num_heads} of {config.name} is not "
            f"divisible by tensor {tensor} (a shard never splits a head); use a tensor degree that divides it"
        )


def weight_shardings(config: TransformerConfig, mesh: Mesh, quantization: str = "none") -> Weights:
    """A :class:`Weights`-shaped pytree of NamedShardings (None where a layer has no such weight)."""
    int8 = quantization == "int8"

    def place(weight: WeightShape | None) -> Any:
        if weight is None:
            return None
        values = named_sharding(weight.axes, weight.units, mesh)
        if not int8 or weight.contracted is None:
            return values
        kept = [i for i in range(len(weight.axes)) if i not in weight.contracted]
        scale = named_sharding(
            tuple(weight.axes[i] for i in kept), tuple(weight.units[i] for i in kept), mesh
        )
        return Int8._make((values, scale))

    layers = [
        {name: place(weight) for name, weight in axes.layer_weights(config, i).items()}
        for i in range(config.num_layers)
    ]
    per_layer = {name: place(weight) for name, weight in axes.per_layer_weights(config).items()}
    final_norm = named_sharding(("embed",), (1,), mesh)
    return Weights._make((place(axes.embedding(config)), layers, final_norm, per_layer or None))


def placement(config: TransformerConfig, mesh: Mesh) -> Placement:
    """The step's placement on ``mesh``: logical axes pinned through the table, and the row shards."""

    def constrain(x: Array, logical: Axes) -> Array:
        pinned: Array = jax.lax.with_sharding_constraint(x, named_sharding(logical, x.shape, mesh))
        return pinned

    return Placement(constrain, row_shards(config, mesh), mesh.devices.flat[0].platform)


def row_shards(config: TransformerConfig, mesh: Mesh) -> dict[str, int]:
    """How many shards split the first (row) axis of each matrix and of the embedding ("embedding")."""
    sizes = dict(mesh.shape)
    first: dict[str, int] = {"embedding": axes.embedding(config).splits(sizes)[0]}
    for index in range(config.num_layers):
        for name, weight in axes.layer_weights(config, index).items():
            if name in MATRICES and weight is not None:
                first.setdefault(name, weight.splits(sizes)[0])
    return first


def cache_shardings(config: TransformerConfig, mesh: Mesh) -> list[dict[str, NamedSharding]]:
    """A sharding per layer for its keys and values [data, slots / data, S, K, H] and positions."""
    data = mesh.shape["data"]
    pos = named_sharding(("batch", None, "sequence"), (data, 1, 1), mesh)
    out = []
    for attn_type in config.attention_types:
        kv_heads = config.kv_heads_of(attn_type)
        kv = named_sharding(
            ("batch", None, "sequence", "kv_heads", "head_dim"), (data, 1, 1, kv_heads, 1), mesh
        )
        out.append({"k": kv, "v": kv, "pos": pos})
    return out


def shard_rows(mesh: Mesh) -> NamedSharding:
    """Per-step inputs and outputs [data, ...]: each data shard's rows on that shard."""
    return named_sharding(("batch",), (mesh.shape["data"],), mesh)


def logits_sharding(config: TransformerConfig, mesh: Mesh, rows: int) -> NamedSharding:
    """Logits [rows, V] of every data shard's rows: rows over ``data``, the vocabulary as the embedding."""
    return named_sharding(("batch", "vocab"), (rows, config.vocab_size), mesh)
