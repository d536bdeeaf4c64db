"""Our own checkpoint format: ``config.json`` (the TransformerConfig) beside an Orbax checkpoint of the
parameters by our names. What `gemma-runtime convert` writes and serving loads fastest.

``tensors`` reads it one array at a time to the host; ``restore`` given shardings lets Orbax read each
device's shard straight from the files into that device (cast to the parameter dtype on the way)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp

from gemma_runtime.checkpoint.arrays import stored_tree
from gemma_runtime.checkpoint.params import (
    CheckpointError,
    Shardings,
    Tensor,
    abstract_model,
    check_complete,
    check_tensor,
    load,
    variables,
)
from gemma_runtime.model import Transformer, TransformerConfig

log = logging.getLogger(__name__)
FORMAT = "gemma-runtime/v1"


def is_ours(path: Path) -> bool:
    config = path / "config.json"
    return config.exists() and json.loads(config.read_text()).get("format") == FORMAT


def save(model: Transformer, directory: Path) -> Path:
    """Write ``directory/config.json`` and ``directory/params`` (Orbax); returns the directory. In a run of
    several processes every process calls it: each writes the shards it holds (no process can read the
    others' to the host), and process 0 the config."""
    import orbax.checkpoint as ocp

    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params = {name: var[...] for name, var in variables(model).items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "params", params, force=True)
    if jax.process_index() == 0:
        (directory / "config.json").write_text(
            json.dumps({"format": FORMAT, "model": model.config.to_dict()}, indent=2)
        )
    return directory


def read_config(directory: Path) -> TransformerConfig:
    if not is_ours(directory):
        raise CheckpointError(f"{directory}: not a {FORMAT} checkpoint (no config.json with that format)")
    return TransformerConfig.from_dict(json.loads((directory / "config.json").read_text())["model"])


def tensors(directory: Path) -> Iterator[Tensor]:
    """Every parameter, read to the host one at a time."""
    for name, stored in stored_tree(directory.absolute() / "params").items():
        yield name, stored.read(), f"{directory.name}/params:{name}"


def restore(
    directory: Path,
    *,
    param_dtype: jnp.dtype = jnp.float32,
    dtype: jnp.dtype = jnp.float32,
    shardings: Shardings | None = None,
) -> Transformer:
    """The model; with ``shardings``, every parameter restored straight into its sharding (parameters
    without one go to the default device)."""
    config = read_config(directory)
    if shardings is None:
        return load(config, tensors(directory), source=str(directory), param_dtype=param_dtype, dtype=dtype)
    return _restore_into(directory, config, param_dtype, dtype, shardings)


def _restore_into(
    directory: Path,
    config: TransformerConfig,
    param_dtype: jnp.dtype,
    dtype: jnp.dtype,
    shardings: Shardings,
) -> Transformer:
    import orbax.checkpoint as ocp

    started = time.monotonic()
    model = abstract_model(config, param_dtype, dtype)
    targets = variables(model)
    shapes = {name: tuple(var.shape) for name, var in targets.items()}
    path = directory.absolute() / "params"
    stored = stored_tree(path)
    for name, array in stored.items():
        check_tensor(name, array.shape, f"params:{name}", shapes=shapes, config=config, source=str(directory))
    check_complete(shapes, set(stored), str(directory))
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {
        name: jax.ShapeDtypeStruct(shape, param_dtype, sharding=shardings(name) or default)
        for name, shape in shapes.items()
    }
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, target)
    for name, var in targets.items():
        var.set_value(restored[name])
    seconds = max(time.monotonic() - started, 1e-9)
    size = sum(int(a.size) * a.dtype.itemsize for a in restored.values()) / 1e9
    log.info(
        "restored %d tensors, %.2f GB into their shardings in %.1f s (%.2f GB/s) from %s",
        len(targets),
        size,
        seconds,
        size / seconds,
        directory,
    )
    return model
