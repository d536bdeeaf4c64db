"""The official Gemma JAX parameter tree (the Flax/Orbax checkpoints Google publishes for JAX).

``layer_{i}/attn/q_einsum/w`` [N, D, H] and ``kv_einsum/w`` [2, K, D, H], or one fused ``qkv_einsum/w``
[3, N, D, H] for multi-head models; ``mlp/gating_einsum`` is [2, D, F], or [2, F, D] when transposed
(Gemma 2 9B/27B, Gemma 3); index 0 is the GELU gate. Some releases nest everything under ``transformer``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gemma_runtime.checkpoint.arrays import stored_tree
from gemma_runtime.checkpoint.params import CheckpointError, Tensor
from gemma_runtime.variants import TransformerConfig

_DIRECT = {
    "pre_attention_norm/scale": "pre_attention_norm.scale",
    "post_attention_norm/scale": "post_attention_norm.scale",
    "pre_ffw_norm/scale": "pre_ffw_norm.scale",
    "post_ffw_norm/scale": "post_ffw_norm.scale",
    "attn/q_einsum/w": "attn.q",
    "attn/attn_vec_einsum/w": "attn.o",
    "attn/_query_norm/scale": "attn.query_norm.scale",
    "attn/_key_norm/scale": "attn.key_norm.scale",
    "mlp/linear": "mlp.down",
}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def _split(name: str, array: np.ndarray, config: TransformerConfig) -> Iterator[tuple[str, np.ndarray]]:
    if name == "embedder/input_embedding":
        yield "embedder.input_embedding", array
        return
    if name == "final_norm/scale":
        yield "final_norm.scale", array
        return
    match = re.fullmatch(r"layer_(\d+)/(.+)", name)
    if not match:
        raise CheckpointError(f"unexpected tensor {name!r}")
    prefix, rest = f"layers.{match.group(1)}.", match.group(2)
    if rest in ("mlp/gating_einsum/w", "mlp/linear/w"):  # the flat layout of some releases nests a `w`
        rest = rest.removesuffix("/w")
    if rest in _DIRECT:
        yield prefix + _DIRECT[rest], array
    elif rest == "attn/kv_einsum/w":  # [2, K, D, H]
        yield prefix + "attn.k", array[0]
        yield prefix + "attn.v", array[1]
    elif rest == "attn/qkv_einsum/w":  # [3, N, D, H]
        yield prefix + "attn.q", array[0]
        yield prefix + "attn.k", array[1]
        yield prefix + "attn.v", array[2]
    elif rest == "mlp/gating_einsum":
        gate, up = array[0], array[1]
        if gate.shape == (config.hidden_dim, config.embed_dim) and config.hidden_dim != config.embed_dim:
            gate, up = gate.T, up.T  # the transposed layout [2, F, D]
        yield prefix + "mlp.gate", np.ascontiguousarray(gate)
        yield prefix + "mlp.up", np.ascontiguousarray(up)
    else:
        raise CheckpointError(f"unexpected tensor {name!r}")


def tensors(
    tree: Mapping[str, Any], config: TransformerConfig, source: str = "official tree"
) -> Iterator[Tensor]:
    """Stream an official parameter tree (nested dicts of arrays, or of stored arrays read one at a time)
    in our layout."""
    for name, value in flatten(tree).items():
        clean = name.removeprefix("transformer/").removeprefix("params/")
        for ours, array in _split(clean, np.asarray(value), config):
            yield ours, array, f"{source}:{name}"


def with_vocab_of(tree: Mapping[str, Any], config: TransformerConfig) -> TransformerConfig:
    """The official trees carry 256128 embedding rows for Gemma 1/2 (256000 in Hugging Face's)."""
    for name, value in flatten(tree).items():
        if name.endswith("embedder/input_embedding"):
            return config.replace(vocab_size=int(np.shape(value)[0]))
    raise CheckpointError("official tree has no embedder/input_embedding")


def read_orbax(path: Path) -> dict[str, Any]:
    """An official Orbax checkpoint as nested dicts of arrays read to the host on demand
    (``np.asarray``), one at a time as ``tensors`` streams them; nothing is read here."""
    return stored_tree(path)
