"""The one logical-axis table, and every serving weight's logical axes and shape.

JAX-free: ``parallel/sharding.py`` turns the table into shardings for training and serving,
``serve/layout.py`` places the serving weights by it, and the memory model (``memory.py``) counts each
chip's share of the same weights with it, so the three cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping

from gemma_runtime.variants import TransformerConfig

MeshAxes = str | tuple[str, ...] | None
Axes = tuple[str | None, ...]

# Weights are sharded over fsdp along the embedding and over tensor along heads, MLP and vocabulary;
# a mixture of experts' experts over expert; batches over data and fsdp (MaxText's logical-axis rules).
# An axis not named here is replicated.
LOGICAL_AXIS_RULES: Mapping[str, MeshAxes] = {
    "batch": ("data", "fsdp"),
    "sequence": None,
    "embed": "fsdp",
    "vocab": "tensor",
    "mlp": "tensor",
    "experts": "expert",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
}


def mesh_axes(logical: str | None) -> tuple[str, ...]:
    """The mesh axes the table maps a logical axis to (none: replicated)."""
    mapped = LOGICAL_AXIS_RULES.get(logical) if logical else None
    return () if mapped is None else (mapped,) if isinstance(mapped, str) else mapped


@dataclasses.dataclass(frozen=True)
class WeightShape:
    """One serving weight: its logical axes, its shape in the serving layout (projections as [in, out]
    matrices with heads flattened), how many units (heads, rows) each axis holds (a shard never splits a
    head), and the axes int8 contracts (None: it stays in the compute dtype under int8)."""

    axes: Axes
    shape: tuple[int, ...]
    units: tuple[int, ...]
    contracted: tuple[int, ...] | None = None

    def splits(self, mesh: Mapping[str, int]) -> tuple[int, ...]:
        """How many ways ``mesh`` (axis sizes) splits each axis: the table's mesh axes where their
        product divides the axis's units, else 1 (replicated)."""
        out = []
        for logical, units in zip(self.axes, self.units, strict=True):
            size = math.prod(mesh.get(a, 1) for a in mesh_axes(logical))
            out.append(size if units % size == 0 else 1)
        return tuple(out)

    def bytes_per_device(self, mesh: Mapping[str, int], itemsize: int, int8: bool) -> int:
        """Bytes of this weight on each device that holds a shard: int8 values and an f32 scale per
        index of the axes not contracted, when ``int8`` and the weight is quantized."""
        splits = self.splits(mesh)
        elements = math.prod(self.shape) // math.prod(splits)
        if not int8 or self.contracted is None:
            return elements * itemsize
        kept = [i for i in range(len(self.shape)) if i not in self.contracted]
        scales = math.prod(self.shape[i] // splits[i] for i in kept)
        return elements + 4 * scales


def _matrix(axes: Axes, rows: int, cols: int, units: tuple[int, int]) -> WeightShape:
    return WeightShape(axes, (rows, cols), units, contracted=(0,))


def _vector(axis: str | None, length: int) -> WeightShape:
    return WeightShape((axis,), (length,), (length,))


def layer_weights(config: TransformerConfig, index: int) -> dict[str, WeightShape | None]:
    """Each serving weight of one layer, by the names the model's blocks use (``Block.weights``); None
    for a Gemma 1-3 name the layer has not (a norm, or Gemma 4's k and v on a KV-shared layer, its v
    where keys double as values)."""
    attn_type = config.attention_types[index]
    d, n, f = config.embed_dim, config.num_heads, config.hidden_dim_of(index)
    kv, h = config.kv_heads_of(attn_type), config.head_dim_of(attn_type)
    own_kv = config.kv_sources[index] is None
    qk = config.use_qk_norm
    kv_proj = _matrix(("embed", "kv_heads"), d, kv * h, (d, kv))
    out: dict[str, WeightShape | None] = {
        "q": _matrix(("embed", "heads"), d, n * h, (d, n)),
        "k": kv_proj if own_kv else None,
        "v": kv_proj if own_kv and not config.values_are_keys(attn_type) else None,
        "o": _matrix(("heads", "embed"), n * h, d, (n, d)),
        "gate": _matrix(("embed", "mlp"), d, f, (d, f)),
        "up": _matrix(("embed", "mlp"), d, f, (d, f)),
        "down": _matrix(("mlp", "embed"), f, d, (f, d)),
        "pre_attention_norm": _vector("embed", d),
        "post_attention_norm": _vector("embed", d) if config.use_post_attn_norm else None,
        "pre_ffw_norm": _vector("embed", d),
        "post_ffw_norm": _vector("embed", d) if config.use_post_ffw_norm else None,
        "query_norm": _vector("head_dim", h) if qk else None,
        "key_norm": _vector("head_dim", h) if qk and own_kv else None,
    }
    if config.num_experts:
        e, m = config.num_experts, config.expert_hidden_dim
        up = WeightShape(("experts", "embed", "mlp"), (e, d, m), (e, d, m), contracted=(1,))
        out |= {
            "router": WeightShape(("embed", None), (d, e), (d, e)),
            "router_scale": _vector("embed", d),
            "per_expert_scale": _vector(None, e),
            "experts_gate": up,
            "experts_up": up,
            "experts_down": WeightShape(("experts", "mlp", "embed"), (e, m, d), (e, m, d), contracted=(1,)),
            **dict.fromkeys(("pre_ffw_norm_2", "post_ffw_norm_1", "post_ffw_norm_2"), _vector("embed", d)),
        }
    if config.per_layer_input_dim:
        width = config.per_layer_input_dim
        out |= {
            "per_layer_gate": _matrix(("embed", None), d, width, (d, width)),
            "per_layer_projection": _matrix((None, "embed"), width, d, (width, d)),
            "post_per_layer_norm": _vector("embed", d),
        }
    if config.use_layer_scalar:
        out["layer_scalar"] = _vector(None, 1)
    return out


def embedding(config: TransformerConfig) -> WeightShape:
    """The embedding [V, D], also the output projection (int8 contracts D, one scale per token)."""
    v, d = config.vocab_size, config.embed_dim
    return WeightShape(("vocab", "embed"), (v, d), (v, d), contracted=(1,))


def per_layer_weights(config: TransformerConfig) -> dict[str, WeightShape]:
    """The E models' per-layer input table [V, L*P], its projection from the embedding [D, L*P] and the
    projection's norm [P] (``Weights.per_layer``); empty for the others."""
    if not config.per_layer_input_dim:
        return {}
    width = config.num_layers * config.per_layer_input_dim
    rows = config.per_layer_vocab_size or config.vocab_size
    return {
        "table": WeightShape(("vocab", None), (rows, width), (rows, width), contracted=(1,)),
        "projection": _matrix(("embed", None), config.embed_dim, width, (config.embed_dim, width)),
        "norm": _vector(None, config.per_layer_input_dim),
    }


def serving_weights(config: TransformerConfig) -> Iterator[WeightShape]:
    """Every serving weight of the model: each layer's, the embedding, the final norm, the per-layer
    inputs' (what ``serve/weights.py``'s ``Weights`` holds)."""
    for index in range(config.num_layers):
        yield from (w for w in layer_weights(config, index).values() if w is not None)
    yield embedding(config)
    yield _vector("embed", config.embed_dim)
    yield from per_layer_weights(config).values()
