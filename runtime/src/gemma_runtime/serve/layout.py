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
_NORMS: dict[str, Axes] = {
    "pre_attention_norm": ("embed",),
    "post_attention_norm": ("embed",),
    "pre_ffw_norm": ("embed",),
    "post_ffw_norm": ("embed",),
    "query_norm": ("head_dim",),
    "key_norm": ("head_dim",),
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


def weight_shardings(config: TransformerConfig, mesh: Mesh, quantization: str = "none") -> Weights:
    """A :class:`Weights`-shaped pytree of NamedShardings (None where a layer has no such norm)."""
    int8 = quantization == "int8"

    def matrix(name: str) -> Any:
        axes, units = _matrix(config, name)
        values = named_sharding(axes, units, mesh)
        if not int8:
            return values
        return Int8._make((values, named_sharding(axes[1:], units[1:], mesh)))  # contracted on axis 0

    def norm(name: str) -> NamedSharding | None:
        present = {
            "post_attention_norm": config.use_post_attn_norm,
            "post_ffw_norm": config.use_post_ffw_norm,
            "query_norm": config.use_qk_norm,
            "key_norm": config.use_qk_norm,
        }.get(name, True)
        return named_sharding(_NORMS[name], (1,), mesh) if present else None

    layers = [
        {**{n: matrix(n) for n in _MATRICES}, **{n: norm(n) for n in _NORMS}}
        for _ in range(config.num_layers)
    ]
    axes, units = _matrix(config, "embedding")
    table = named_sharding(axes, units, mesh)
    embedding = Int8._make((table, named_sharding(axes[:1], units[:1], mesh))) if int8 else table
    return Weights._make((embedding, layers, named_sharding(("embed",), (1,), mesh)))


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
    kv = named_sharding(
        ("batch", None, "sequence", "kv_heads", "head_dim"), (data, 1, 1, config.num_kv_heads, 1), mesh
    )
    pos = named_sharding(("batch", None, "sequence"), (data, 1, 1), mesh)
    return [{"k": kv, "v": kv, "pos": pos} for _ in config.attention_types]


def shard_rows(mesh: Mesh) -> NamedSharding:
    """Per-step inputs and outputs [data, ...]: each data shard's rows on that shard."""
    return named_sharding(("batch",), (mesh.shape["data"],), mesh)


def logits_sharding(config: TransformerConfig, mesh: Mesh, rows: int) -> NamedSharding:
    """Logits [rows, V] of every data shard's rows: rows over ``data``, the vocabulary as the embedding."""
    return named_sharding(("batch", "vocab"), (rows, config.vocab_size), mesh)
