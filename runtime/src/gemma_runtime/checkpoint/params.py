"""Our parameter names ('layers.3.attn.q'), and loading tensors into a model one at a time.

Importers yield ``(our name, array, source name)``; ``load`` builds the model abstractly (no memory),
places each tensor as it arrives (so a 27B checkpoint is never held twice), checks every shape and
reports what is missing, naming the tensors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gemma_runtime.model import Transformer, TransformerConfig

log = logging.getLogger(__name__)

Tensor = tuple[str, np.ndarray, str]  # (our name, array, name in the source checkpoint)


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message names the tensor and the source."""


def _name(path: tuple[object, ...]) -> str:
    return ".".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def variables(model: nnx.Module) -> dict[str, nnx.Variable[jax.Array]]:
    """Every parameter of ``model`` by our dotted name."""
    state = nnx.state(model, nnx.Param)
    leaves = jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return {_name(path): var for path, var in leaves}


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    return {name: np.asarray(var[...]) for name, var in variables(model).items()}


def load(
    config: TransformerConfig,
    tensors: Iterable[Tensor],
    *,
    source: str,
    param_dtype: jnp.dtype = jnp.float32,
    dtype: jnp.dtype = jnp.float32,
    shardings: Callable[[str], jax.sharding.Sharding | None] | None = None,
) -> Transformer:
    """A Transformer whose parameters all come from ``tensors``."""
    model = nnx.eval_shape(
        lambda: Transformer(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, dtype=dtype)
    )
    targets = variables(model)
    filled: set[str] = set()
    started, done_bytes = time.monotonic(), 0
    for name, array, source_name in tensors:
        var = targets.get(name)
        if var is None:
            raise CheckpointError(
                f"{source}: tensor {source_name!r} maps to {name!r}, which this model does not have"
            )
        if tuple(array.shape) != tuple(var.shape):
            raise CheckpointError(
                f"{source}: tensor {source_name!r} has shape {list(array.shape)} but {name} needs "
                f"{list(var.shape)} for {config.name}"
            )
        value = jnp.asarray(array, dtype=param_dtype)
        sharding = shardings(name) if shardings else None
        var.set_value(jax.device_put(value, sharding) if sharding is not None else value)
        filled.add(name)
        done_bytes += array.nbytes
        if len(filled) % 50 == 0:
            seconds = max(time.monotonic() - started, 1e-9)
            log.info(
                "loaded %d/%d tensors, %.2f GB at %.2f GB/s",
                len(filled),
                len(targets),
                done_bytes / 1e9,
                done_bytes / 1e9 / seconds,
            )
    missing = sorted(set(targets) - filled)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} tensors missing, e.g. {', '.join(missing[:5])}")
    seconds = max(time.monotonic() - started, 1e-9)
    log.info(
        "loaded %d tensors, %.2f GB in %.1f s (%.2f GB/s) from %s",
        len(filled),
        done_bytes / 1e9,
        seconds,
        done_bytes / 1e9 / seconds,
        source,
    )
    return model
