"""Our parameter names ('layers.3.attn.q'), and loading tensors into a model one at a time.

Importers yield ``(our name, array, source name)``; ``load`` builds the model abstractly (no memory),
places each tensor as it arrives (so a 27B checkpoint is never held twice), checks every shape and
reports what is missing, naming the tensors. Given shardings, each tensor is cast on the host and each
device receives only its own shard. The checks and the progress log serve every loader (serving's too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.parallel.sharding import place

log = logging.getLogger(__name__)

Tensor = tuple[str, np.ndarray, str]  # (our name, array, name in the source checkpoint)
Shardings = Callable[[str], jax.sharding.Sharding | None]  # our name -> where that parameter goes


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


def abstract_model(
    config: TransformerConfig, param_dtype: jnp.dtype = jnp.float32, dtype: jnp.dtype = jnp.float32
) -> Transformer:
    """The model's structure, shapes and parameter metadata, with no memory behind them."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, dtype=dtype))


def check_tensor(
    name: str,
    shape: tuple[int, ...],
    source_name: str,
    *,
    shapes: Mapping[str, tuple[int, ...]],
    config: TransformerConfig,
    source: str,
) -> None:
    """Raise unless the model has a parameter ``name`` of this shape."""
    wanted = shapes.get(name)
    if wanted is None:
        raise CheckpointError(
            f"{source}: tensor {source_name!r} maps to {name!r}, which this model does not have"
        )
    if tuple(shape) != tuple(wanted):
        raise CheckpointError(
            f"{source}: tensor {source_name!r} has shape {list(shape)} but {name} needs "
            f"{list(wanted)} for {config.name}"
        )


def check_complete(shapes: Mapping[str, object], filled: set[str], source: str) -> None:
    missing = sorted(set(shapes) - filled)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} tensors missing, e.g. {', '.join(missing[:5])}")


class Progress:
    """Tensors and bytes read so far; logs the rate every 50 tensors and at the end."""

    def __init__(self, total: int, source: str) -> None:
        self.total, self.source = total, source
        self.tensors, self.bytes, self.started = 0, 0, time.monotonic()

    def add(self, nbytes: int) -> None:
        self.tensors += 1
        self.bytes += nbytes
        if self.tensors % 50 == 0:
            log.info(
                "loaded %d/%d tensors, %.2f GB at %.2f GB/s",
                self.tensors,
                self.total,
                self.bytes / 1e9,
                self.bytes / 1e9 / self.seconds,
            )

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def done(self) -> None:
        log.info(
            "loaded %d tensors, %.2f GB in %.1f s (%.2f GB/s) from %s",
            self.tensors,
            self.bytes / 1e9,
            self.seconds,
            self.bytes / 1e9 / self.seconds,
            self.source,
        )


def load(
    config: TransformerConfig,
    tensors: Iterable[Tensor],
    *,
    source: str,
    param_dtype: jnp.dtype = jnp.float32,
    dtype: jnp.dtype = jnp.float32,
    shardings: Shardings | None = None,
) -> Transformer:
    """A Transformer whose parameters all come from ``tensors``; where ``shardings`` names a sharding for
    a parameter it is cast on the host and placed shard by shard, else it goes to the default device."""
    model = abstract_model(config, param_dtype, dtype)
    targets = variables(model)
    shapes = {name: tuple(var.shape) for name, var in targets.items()}
    filled: set[str] = set()
    progress = Progress(len(targets), source)
    for name, array, source_name in tensors:
        check_tensor(name, array.shape, source_name, shapes=shapes, config=config, source=source)
        sharding = shardings(name) if shardings else None
        if sharding is None:
            targets[name].set_value(jnp.asarray(array, dtype=param_dtype))
        else:
            targets[name].set_value(place(array.astype(np.dtype(param_dtype), copy=False), sharding))
        filled.add(name)
        progress.add(array.nbytes)
    check_complete(targets, filled, source)
    progress.done()
    return model
