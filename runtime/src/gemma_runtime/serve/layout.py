"""Where the serving weights live on a ``data`` x ``tensor`` mesh of one host's chips.

Every serving weight is named by logical axes and placed by the one logical-axis table
(``gemma_runtime.parallel.sharding``) that also shards training: query heads, KV heads, the FFN hidden
axis and the vocabulary over ``tensor``; every weight is replicated over ``data`` (which splits the
decode slots). A KV-head axis that ``tensor`` does not divide (Gemma 2B and Gemma 3 1B have one KV head)
is replicated, as MaxText and JetStream do. The projections are stored as [in, out] matrices with heads
flattened (``weights.py``), so divisibility is checked on heads, never on the flattened axis: a shard
never splits a head.
"""

from __future__ import annotations

from typing import Any

from jax.sharding import Mesh, NamedSharding

from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import named_sharding
from gemma_runtime.serve.weights import Int8, Weights
from gemma_runtime.variants import TransformerConfig

Axes = tuple[str | None, ...]

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


def weight_shardings(config: TransformerConfig, mesh: Mesh, quantization: str = "none") -> Weights:
    """A :class:`Weights`-shaped pytree of NamedShardings (None where a layer has no such norm)."""
    int8 = quantization == "int8"

    def matrix(name: str) -> Any:
        axes, first, second = _MATRICES[name]
        units = (getattr(config, first), getattr(config, second))
        values = named_sharding(axes, units, mesh)
        if not int8:
            return values
        return Int8(values, named_sharding(axes[1:], units[1:], mesh))  # contracted on axis 0

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
    table_units = (config.vocab_size, config.embed_dim)
    table = named_sharding(("vocab", "embed"), table_units, mesh)
    embedding: Any = Int8(table, named_sharding(("vocab",), table_units[:1], mesh)) if int8 else table
    return Weights(embedding, layers, named_sharding(("embed",), (1,), mesh))
