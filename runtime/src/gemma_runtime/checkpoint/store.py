"""Our own checkpoint format: ``config.json`` (the TransformerConfig) beside an Orbax checkpoint of the
parameters by our names. What `gemma-runtime convert` writes and serving loads fastest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gemma_runtime.checkpoint.params import CheckpointError, Tensor, flat_params, load
from gemma_runtime.model import Transformer, TransformerConfig

FORMAT = "gemma-runtime/v1"


def is_ours(path: Path) -> bool:
    config = path / "config.json"
    return config.exists() and json.loads(config.read_text()).get("format") == FORMAT


def save(model: Transformer, directory: Path) -> Path:
    """Write ``directory/config.json`` and ``directory/params`` (Orbax); returns the directory."""
    import orbax.checkpoint as ocp

    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params = flat_params(model)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "params", params, force=True)
    (directory / "config.json").write_text(
        json.dumps({"format": FORMAT, "model": model.config.to_dict()}, indent=2)
    )
    return directory


def read_config(directory: Path) -> TransformerConfig:
    if not is_ours(directory):
        raise CheckpointError(f"{directory}: not a {FORMAT} checkpoint (no config.json with that format)")
    return TransformerConfig.from_dict(json.loads((directory / "config.json").read_text())["model"])


def tensors(directory: Path) -> Iterator[Tensor]:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(directory.absolute() / "params")
        tree = getattr(metadata, "item_metadata", metadata)
        target = {name: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype) for name, m in dict(tree).items()}
        restored = checkpointer.restore(directory.absolute() / "params", target)
    for name, array in restored.items():
        yield name, np.asarray(array), f"{directory.name}/params:{name}"


def restore(
    directory: Path, *, param_dtype: jnp.dtype = jnp.float32, dtype: jnp.dtype = jnp.float32
) -> Transformer:
    config = read_config(directory)
    return load(config, tensors(directory), source=str(directory), param_dtype=param_dtype, dtype=dtype)
