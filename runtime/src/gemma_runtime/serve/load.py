"""Serving weights straight into their shards.

``load_weights`` reads a checkpoint's tensors one at a time (``checkpoint.open_checkpoint``), turns each
into its serving form on the host (the dtype, then ``weights.host_serving_form``: layout and int8 in row
blocks) and places it by ``layout.weight_shardings`` with ``parallel.sharding.place``: each device only
ever receives its own shard, and the host holds one tensor (and its int8 form) at a time. No whole model
and no whole tensor ever sits on one device, which a 16 GiB chip could not hold for Gemma 7B or 9B.
``random_weights`` creates random weights in their shards, for serving without a checkpoint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gemma_runtime import axes
from gemma_runtime.checkpoint import Format, errors_named, open_checkpoint
from gemma_runtime.checkpoint.params import (
    Progress,
    Tensor,
    abstract_model,
    check_complete,
    check_tensor,
    variables,
)
from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.model.matmul import Int8, Weight
from gemma_runtime.parallel.sharding import place
from gemma_runtime.serve.layout import weight_shardings
from gemma_runtime.serve.weights import (
    QUANTIZED,
    HostWeight,
    LayerWeights,
    Weights,
    bytes_per_device,
    extract,
    host_serving_form,
)

log = logging.getLogger(__name__)

_LAYER = re.compile(r"layers\.(\d+)\.(?:attn\.|mlp\.)?(\w+?)(?:\.scale)?")
_EXPERTS = re.compile(r"layers\.(\d+)\.moe\.(\w+)")  # Gemma 4's experts and router
_EXPERT_KEYS = {"gate": "experts_gate", "up": "experts_up", "down": "experts_down"}
# Gemma 4 E models' per-layer input weights, by our name: their key in ``Weights.per_layer``
_PER_LAYER = {
    "per_layer_embedding": "table",
    "per_layer_projection": "projection",
    "per_layer_projection_norm.scale": "norm",
}


def load_weights(
    path: Path,
    *,
    variant: str | None = None,
    format: Format | None = None,
    dtype: Any = jnp.float32,
    quantization: str = "none",
    mesh: Mesh,
    on_tensor: Callable[[str], None] | None = None,
) -> tuple[TransformerConfig, Weights]:
    """The checkpoint's architecture and its serving weights laid out on ``mesh``, equal to
    ``extract(load_model(path, param_dtype=dtype), quantization)``. ``on_tensor(name)`` runs after each
    tensor is placed (what the memory measurements sample)."""
    path = Path(path)
    with errors_named(path):
        kind, config, tensors = open_checkpoint(path, variant=variant, format=format)
        log.info(
            "loading %s checkpoint from %s as %s weights%s on mesh %s",
            kind,
            path,
            jnp.dtype(dtype).name,
            " (int8)" if quantization == "int8" else "",
            dict(mesh.shape),
        )
        weights = _place_all(
            config,
            tensors,
            source=str(path),
            dtype=jnp.dtype(dtype),
            quantization=quantization,
            mesh=mesh,
            on_tensor=on_tensor,
        )
    log.info("serving weights: %.2f GB per device", bytes_per_device(weights) / 1e9)
    return config, weights


def _slot(name: str) -> tuple[int | None, str]:
    """Where a parameter goes in :class:`Weights`: (layer or None, key): (3, "q"), (None, "embedding")."""
    if name == "embedder.input_embedding":
        return None, "embedding"
    if name == "final_norm.scale":
        return None, "final_norm"
    if name in _PER_LAYER:
        return None, _PER_LAYER[name]
    if experts := _EXPERTS.fullmatch(name):
        return int(experts[1]), _EXPERT_KEYS.get(experts[2], experts[2])
    match = _LAYER.fullmatch(name)
    assert match, name  # every name was checked against the model's parameters
    return int(match[1]), match[2]


def _place(form: HostWeight, sharding: Any) -> Weight:
    if isinstance(form, tuple):
        values, scale = form
        return Int8(place(values, sharding.values), place(scale, sharding.scale))
    return place(form, sharding)


def _place_all(
    config: TransformerConfig,
    tensors: Iterable[Tensor],
    *,
    source: str,
    dtype: np.dtype,
    quantization: str,
    mesh: Mesh,
    on_tensor: Callable[[str], None] | None,
) -> Weights:
    shardings = weight_shardings(config, mesh, quantization)
    shapes = {name: tuple(var.shape) for name, var in variables(abstract_model(config)).items()}
    layers: list[LayerWeights] = [
        dict.fromkeys(axes.layer_weights(config, i)) for i in range(config.num_layers)
    ]
    top: dict[str, Any] = {}  # the embedding and the final norm
    per_layer: dict[str, Any] = {}  # Gemma 4 E models' per-layer input weights
    filled: set[str] = set()
    progress = Progress(len(shapes), source)
    for name, array, source_name in tensors:
        check_tensor(name, array.shape, source_name, shapes=shapes, config=config, source=source)
        layer, key = _slot(name)
        kind = key if key in QUANTIZED else "norm"
        nbytes = array.nbytes
        # The dtype first: int8 quantizes the values a model in that dtype holds, as extract does.
        form = host_serving_form(kind, array.astype(dtype, copy=False), quantization)
        del array  # hold no more than the stream does
        if layer is None and name in _PER_LAYER:
            assert shardings.per_layer is not None  # the name was checked against the model's parameters
            per_layer[key] = _place(form, shardings.per_layer[key])
        elif layer is None:
            top[key] = _place(form, shardings.embedding if key == "embedding" else shardings.final_norm)
        else:
            layers[layer][key] = _place(form, shardings.layers[layer][key])
        del form
        filled.add(name)
        progress.add(nbytes)
        if on_tensor is not None:
            on_tensor(name)
    check_complete(shapes, filled, source)
    progress.done()
    return Weights(top["embedding"], layers, top["final_norm"], per_layer or None)


def random_weights(
    config: TransformerConfig,
    *,
    dtype: Any = jnp.float32,
    quantization: str = "none",
    mesh: Mesh,
    seed: int = 0,
) -> Weights:
    """Random serving weights created in their shards (each device computes only its own), equal to
    ``extract(Transformer(config, rngs=nnx.Rngs(seed), param_dtype=dtype, dtype=dtype), quantization)``."""

    def build() -> Weights:
        model = Transformer(config, rngs=nnx.Rngs(seed), param_dtype=dtype, dtype=dtype)
        return extract(model, quantization)

    weights: Weights = jax.jit(build, out_shardings=weight_shardings(config, mesh, quantization))()
    return weights
