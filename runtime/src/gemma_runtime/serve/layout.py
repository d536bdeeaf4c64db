"""Where the serving weights and KV cache live on a ``data`` x ``tensor`` mesh of one host's chips.

Every serving weight is named by logical axes and placed by the one logical-axis table
(``gemma_runtime.parallel.sharding``) that also shards training: query heads, KV heads, the FFN hidden
axis and the vocabulary over ``tensor``; every weight is replicated over ``data`` (which splits the
decode slots). A KV-head axis that ``tensor`` does not divide (Gemma 2B and Gemma 3 1B have one KV head)
is replicated, as MaxText and JetStream do. The projections are stored as [in, out] matrices with heads
flattened (``weights.py``), so divisibility is checked on heads, never on the flattened axis: a shard
never splits a head.

The KV cache is stored [data, slots / data, S, K, H] (positions [data, slots / data, S]): the leading
shard axis over ``data`` ("batch" in the table), so each data replica holds only its own slots, and KV
heads over ``tensor`` like the k and v projections that fill them (replicated where those are).

Gemma 4: global and local layers differ in KV heads and head dim, so units are taken per layer; a layer
has no v where keys double as values; the mixture of experts and the per-layer scalar are laid out by
the same table (experts' hidden axis over ``tensor``, the rest replicated), and so are the E models'
per-layer input table and projection (``Weights.per_layer``). A KV-shared layer's cache is empty.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding

from gemma_runtime.model.matmul import Int8
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import named_sharding
from gemma_runtime.serve.forward import Axes, Placement
from gemma_runtime.serve.weights import Weights
from gemma_runtime.variants import TransformerConfig

Array = jax.Array

# (logical axes, units per axis) of each weight, and the logical axes of its int8 scale (the axes that
# are not contracted). Units: how many heads or rows an axis holds, for the divisibility check.
_MATRICES: dict[str, tuple[Axes, str, str]] = {
    # name: (axes, units of axis 0, units of axis 1) with units named by the config field
    "q": (("embed", "heads"), "embed_dim", "num_heads"),
    "k": (("embed", "kv_heads"), "embed_dim", "num_kv_heads"),
    "v": (("embed", "kv_heads"), "embed_dim", "num_kv_heads"),
    "o": (("heads", "embed"), "num_heads", "embed_dim"),
    "gate": (("embed", "mlp"), "embed_dim", "hidden_dim"),
    "up": (("embed", "mlp"), "embed_dim", "hidden_dim"),
    "down": (("mlp", "embed"), "hidden_dim", "embed_dim"),
}


def serving_mesh(data: int, tensor: int, devices: Any) -> Mesh:
    """The serving mesh: ``fsdp`` is 1 (every data replica holds the whole model, split over tensor)."""
    return make_mesh(data, 1, tensor, devices)


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
    if config.num_heads % tensor:
        raise ValueError(
            f"mesh data={data} x tensor={tensor}: num_heads {config.num_heads} of {config.name} is not "
            f"divisible by tensor {tensor} (a shard never splits a head); use a tensor degree that divides it"
        )


def layer_weights(config: TransformerConfig, index: int) -> dict[str, tuple[Axes, tuple[int, ...]] | None]:
    """(logical axes, units per axis) of each serving weight of one layer, by the names the model's
    blocks use (``Block.weights``); None for a Gemma 1-3 name the layer has not (a norm, or Gemma 4's v
    where keys double as values)."""
    attn_type = config.attention_types[index]
    d, n, kv, f = (
        config.embed_dim,
        config.num_heads,
        config.kv_heads_of(attn_type),
        config.hidden_dim_of(index),
    )
    own_kv = config.kv_sources[index] is None
    qk = config.use_qk_norm
    out: dict[str, tuple[Axes, tuple[int, ...]] | None] = {
        "q": (("embed", "heads"), (d, n)),
        "k": (("embed", "kv_heads"), (d, kv)) if own_kv else None,
        "v": (("embed", "kv_heads"), (d, kv)) if own_kv and not config.values_are_keys(attn_type) else None,
        "o": (("heads", "embed"), (n, d)),
        "gate": (("embed", "mlp"), (d, f)),
        "up": (("embed", "mlp"), (d, f)),
        "down": (("mlp", "embed"), (f, d)),
        "pre_attention_norm": (("embed",), (1,)),
        "post_attention_norm": (("embed",), (1,)) if config.use_post_attn_norm else None,
        "pre_ffw_norm": (("embed",), (1,)),
        "post_ffw_norm": (("embed",), (1,)) if config.use_post_ffw_norm else None,
        "query_norm": (("head_dim",), (1,)) if qk else None,
        "key_norm": (("head_dim",), (1,)) if qk and own_kv else None,
    }
    if config.num_experts:
        e, m = config.num_experts, config.expert_hidden_dim
        out |= {
            "router": (("embed", None), (d, e)),
            "router_scale": (("embed",), (1,)),
            "per_expert_scale": ((None,), (e,)),
            "experts_gate": (("experts", "embed", "mlp"), (e, d, m)),
            "experts_up": (("experts", "embed", "mlp"), (e, d, m)),
            "experts_down": (("experts", "mlp", "embed"), (e, m, d)),
            **dict.fromkeys(("pre_ffw_norm_2", "post_ffw_norm_1", "post_ffw_norm_2"), (("embed",), (1,))),
        }
    if config.per_layer_input_dim:
        width = config.per_layer_input_dim
        out |= {
            "per_layer_gate": (("embed", None), (d, width)),
            "per_layer_projection": ((None, "embed"), (width, d)),
            "post_per_layer_norm": (("embed",), (1,)),
        }
    if config.use_layer_scalar:
        out["layer_scalar"] = ((None,), (1,))
    return out


def weight_shardings(config: TransformerConfig, mesh: Mesh, quantization: str = "none") -> Weights:
    """A :class:`Weights`-shaped pytree of NamedShardings (None where a layer has no such weight)."""
    int8 = quantization == "int8"

    def place(name: str, entry: tuple[Axes, tuple[int, ...]] | None) -> Any:
        if entry is None:
            return None
        axes, units = entry
        values = named_sharding(axes, units, mesh)
        if not int8 or name not in _MATRICES:
            return values
        return Int8._make((values, named_sharding(axes[1:], units[1:], mesh)))  # contracted on axis 0

    layers = [
        {name: place(name, entry) for name, entry in layer_weights(config, i).items()}
        for i in range(config.num_layers)
    ]
    axes, units = _matrix(config, "embedding")
    table = named_sharding(axes, units, mesh)
    embedding = Int8._make((table, named_sharding(axes[:1], units[:1], mesh))) if int8 else table
    per_layer = None
    if config.per_layer_input_dim:
        width = config.num_layers * config.per_layer_input_dim
        rows = config.per_layer_vocab_size or config.vocab_size
        per_layer = {
            "table": named_sharding(("vocab", None), (rows, width), mesh),
            "projection": named_sharding(("embed", None), (config.embed_dim, width), mesh),
            "norm": named_sharding((None,), (1,), mesh),
        }
    return Weights._make((embedding, layers, named_sharding(("embed",), (1,), mesh), per_layer))


def _matrix(config: TransformerConfig, name: str) -> tuple[Axes, tuple[int, int]]:
    """The logical axes and units of a matrix or of the embedding ("embedding", [V, D])."""
    if name == "embedding":
        return ("vocab", "embed"), (config.vocab_size, config.embed_dim)
    axes, first, second = _MATRICES[name]
    return axes, (getattr(config, first), getattr(config, second))


def placement(config: TransformerConfig, mesh: Mesh) -> Placement:
    """The step's placement on ``mesh``: logical axes pinned through the table, and the row shards."""

    def constrain(x: Array, axes: Axes) -> Array:
        pinned: Array = jax.lax.with_sharding_constraint(x, named_sharding(axes, x.shape, mesh))
        return pinned

    return Placement(constrain, row_shards(config, mesh), mesh.devices.flat[0].platform)


def row_shards(config: TransformerConfig, mesh: Mesh) -> dict[str, int]:
    """How many shards split the first (row) axis of each matrix and of the embedding ("embedding")."""

    def first(name: str) -> int:
        spec = named_sharding(*_matrix(config, name), mesh).spec
        axes = spec[0] if spec else None
        names = () if axes is None else (axes,) if isinstance(axes, str) else axes
        return math.prod(mesh.shape[a] for a in names)

    return {name: first(name) for name in (*_MATRICES, "embedding")}


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
