"""The serving engine's view of a model's parameters: a plain pytree of per-layer arrays (separate arrays
per layer: indexing a stacked ``[layers, ...]`` array inside a jitted step copies it every step on CPU),
optionally with int8 weights. Each parameter's serving form (layout, int8) is one function, on JAX
arrays (``extract``, traceable) or on the host in numpy (``host_serving_form``, for ``serve.load``).

int8 is weight-only, symmetric, one scale per output channel (the maximum absolute value over the
contracted axes / 127). Norm scales stay in full precision. The model's one matrix product
(``model/matmul.py``) runs on either kind, on CPU converting an int8 weight one block of rows at a time.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from gemma_runtime.model import Transformer
from gemma_runtime.model.matmul import Int8, Weight

Array = jax.Array

LayerWeights = dict[str, Any]  # q, k, v [D, N*H], o [N*H, D], gate, up, down: Weight; norm scales


class Weights(NamedTuple):
    embedding: Weight  # [V, D]
    layers: list[LayerWeights]
    final_norm: Array  # [D]
    # Gemma 4 E models' per-layer inputs: "table" [V, L*P], "projection" [D, L*P] (both int8 under int8),
    # "norm" [P]
    per_layer: dict[str, Any] | None = None


# The quantization formula, written once for jax.numpy (``quantize``, traceable) and numpy
# (``quantize_host``, in row blocks): a module ``xp`` gives the array functions. Its divisions are
# products with a reciprocal because XLA compiles them so (a division by a constant or by a broadcast
# becomes one): numpy then agrees with XLA to the bit, where its correctly rounded division would differ
# in the last bit of a scale and, now and then, in an int8 value.
def _peak(w: Any, contracted: tuple[int, ...], xp: Any) -> Any:
    """The largest magnitude over the contracted axes, kept as size-1 axes, in f32 (exact: a max)."""
    return xp.max(xp.abs(w), axis=contracted, keepdims=True).astype(xp.float32)


def _scale(peak: Any, xp: Any) -> Any:
    return xp.where(peak > 0, peak * (1.0 / 127.0), 1.0).astype(xp.float32)


def _int8(w: Any, scale: Any, xp: Any) -> Any:
    return xp.clip(xp.round(w.astype(xp.float32) * (1.0 / scale)), -127, 127).astype(xp.int8)


def _kept(shape: tuple[int, ...], contracted: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i not in contracted)


def quantize(weight: Array, contracted: tuple[int, ...]) -> Int8:
    """Per-channel symmetric int8: one scale for every index of the axes not in ``contracted``."""
    scale = _scale(_peak(weight, contracted, jnp), jnp)
    values = _int8(weight, scale, jnp)
    return Int8(values, scale.reshape(_kept(weight.shape, contracted)))


# Values of a host weight quantized at a time: 256k (1 MB as f32), so a loader never makes a full-size f32
# copy of a large weight (Gemma's 256k-row embedding is 3 GB as f32 at D = 3072).
_HOST_BLOCK_VALUES = 1 << 18


def quantize_host(weight: np.ndarray, contracted: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize` on the host, equal value for value, one block of rows (axis 0) at a time:
    ``(values, scale)`` as numpy arrays."""
    rows = weight.shape[0]
    step = max(1, _HOST_BLOCK_VALUES // max(1, weight.size // max(rows, 1)))
    blocks = [slice(start, start + step) for start in range(0, rows, step)]
    across = 0 in contracted  # one scale over every block, else each block's rows have their own
    peaks = (_peak(weight[b], contracted, np) for b in blocks)
    peak = functools.reduce(np.maximum, peaks) if across else np.concatenate(list(peaks), axis=0)
    scale = _scale(peak, np)
    values = np.empty(weight.shape, np.int8)
    for b in blocks:
        values[b] = _int8(weight[b], scale if across else scale[b], np)
    return values, scale.reshape(_kept(weight.shape, contracted))


# Every projection is stored as a plain [in, out] matrix, contracted on axis 0: q/k/v as [D, N*H] (heads
# flattened after moving D first), o as [N*H, D]. Left as [N, D, H] XLA:CPU transposes q and o in every
# step (a copy of the weight per token); the embedding [V, D] contracts D as the output projection.
MATRICES = ("q", "k", "v", "o", "gate", "up", "down")
NORMS = (
    "pre_attention_norm",
    "post_attention_norm",
    "pre_ffw_norm",
    "post_ffw_norm",
    "query_norm",
    "key_norm",
)
# A mixture of experts' weights [E, D, M] and [E, M, D] contract their middle axis (a scale per expert and
# output channel); the E models' per-layer table [V, L*P] is looked up by row like the embedding, and its
# projection [D, L*P] and each layer's gate [D, P] and projection [P, D] are matrices. Their int8 axes are
# the memory model's (``axes.py``).
EXPERTS = ("experts_gate", "experts_up", "experts_down")
_CONTRACTED = {
    **dict.fromkeys((*MATRICES, "per_layer_gate", "per_layer_projection", "projection"), (0,)),
    "embedding": (1,),
    **dict.fromkeys(EXPERTS, (1,)),
    "table": (1,),
}
QUANTIZED = frozenset(_CONTRACTED)  # the kinds int8 quantizes; every other parameter stays as it is

A = TypeVar("A", np.ndarray, jax.Array)
HostWeight = np.ndarray | tuple[np.ndarray, np.ndarray]  # a weight, or int8 (values, scale), on the host


def layout(kind: str, weight: A) -> A:
    """A parameter (our layout: q/k/v [N, D, H], o [N, H, D]) in its serving layout: q/k/v [D, N*H],
    o [N*H, D]; every other kind ("gate", "embedding", "norm", ...) as it is. numpy or JAX."""
    if kind in ("q", "k", "v"):
        n, d, h = weight.shape
        return weight.transpose(1, 0, 2).reshape(d, n * h)
    if kind == "o":
        return weight.reshape(-1, weight.shape[-1])
    return weight


def _check(quantization: str) -> bool:
    """True for int8."""
    if quantization not in ("none", "int8"):
        raise ValueError(f"quantization must be 'none' or 'int8', got {quantization!r}")
    return quantization == "int8"


def serving_form(kind: str, weight: Array, quantization: str) -> Weight:
    """One parameter in its serving form: :func:`layout`, then int8 for the matrices and the embedding
    when ``quantization`` is "int8". Traceable."""
    matrix = layout(kind, weight)
    return quantize(matrix, _CONTRACTED[kind]) if _check(quantization) and kind in _CONTRACTED else matrix


def host_serving_form(kind: str, weight: np.ndarray, quantization: str) -> HostWeight:
    """:func:`serving_form` on the host (numpy in, numpy out), equal value for value."""
    matrix = layout(kind, weight)
    if _check(quantization) and kind in _CONTRACTED:
        return quantize_host(matrix, _CONTRACTED[kind])
    return matrix


def extract(model: Transformer, quantization: str = "none") -> Weights:
    """The model's parameters as a :class:`Weights` pytree; ``quantization`` is "none" or "int8".
    Traceable: ``serve.load.random_weights`` runs it under jit into the weights' shardings."""
    _check(quantization)

    def form(kind: str, value: Array | None) -> Weight | None:
        return None if value is None else serving_form(kind, value, quantization)

    layers = [{name: form(name, value) for name, value in block.weights().items()} for block in model.layers]
    embedding = serving_form("embedding", model.embedder.input_embedding[...], quantization)
    per_layer = None
    if model.config.per_layer_input_dim:
        per_layer = {
            "table": serving_form("table", model.per_layer_embedding[...], quantization),
            "projection": serving_form("projection", model.per_layer_projection[...], quantization),
            "norm": model.per_layer_projection_norm.scale[...],
        }
    return Weights(embedding, layers, model.final_norm.scale[...], per_layer)


def weight_bytes(weights: Weights) -> int:
    """Bytes of every array in the pytree (what one decode step reads, the embedding once)."""
    return sum(int(leaf.size) * leaf.dtype.itemsize for leaf in jax.tree.leaves(weights))


def bytes_per_device(tree: Any) -> int:
    """Bytes of a pytree of placed arrays (weights, a cache) that the most loaded device holds."""
    per: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        shard = math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for device in leaf.sharding.addressable_devices:
            per[device] = per.get(device, 0) + shard
    return max(per.values(), default=0)
