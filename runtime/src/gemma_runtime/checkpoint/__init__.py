"""Checkpoints: importers for the official Gemma JAX tree and Hugging Face safetensors, our own Orbax
format, ``open_checkpoint`` (any of them as a config and a stream of tensors) and ``load_model`` (a
Transformer, optionally straight into shardings)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jax.numpy as jnp

from gemma_runtime.checkpoint import hf, official, store
from gemma_runtime.checkpoint.params import CheckpointError, Shardings, Tensor, load
from gemma_runtime.config import CheckpointFormat as Format
from gemma_runtime.model import Transformer, TransformerConfig, preset
from gemma_runtime.sources.mirror import SourceError, fetched

log = logging.getLogger(__name__)


def detect(path: Path) -> Format:
    if store.is_ours(path):
        return Format.OURS
    if (path / "config.json").exists() and (
        any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists()
    ):
        return Format.SAFETENSORS
    if (
        (path / "_METADATA").exists()
        or (path / "checkpoint").exists()
        or (path / "_CHECKPOINT_METADATA").exists()
    ):
        return Format.ORBAX
    raise CheckpointError(
        f"{path}: cannot tell the checkpoint format: expected config.json + *.safetensors (Hugging Face), "
        "an Orbax checkpoint (official Gemma JAX release), or a gemma-runtime checkpoint"
    )


@contextmanager
def errors_named(path: Path) -> Iterator[None]:
    """Checks that ``path`` exists; a CheckpointError inside, about a folder that ``gemma-runtime fetch``
    filled, names the URI it came from."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        uri = fetched(path)
    except SourceError as err:
        raise CheckpointError(str(err)) from err
    try:
        yield
    except CheckpointError as err:
        if uri is None:
            raise
        raise CheckpointError(f"{uri} (fetched into {path}): {err}") from err


def open_checkpoint(
    path: Path, *, variant: str | None = None, format: Format | None = None
) -> tuple[Format, TransformerConfig, Iterator[Tensor]]:
    """The checkpoint's format, architecture and tensor stream in our names and layout, one tensor at a
    time; nothing but configs and metadata is read until the stream is. The official Orbax tree carries
    no config: ``variant`` names it."""
    kind = format or detect(path)
    if kind == Format.OURS:
        return kind, store.read_config(path), store.tensors(path)
    if kind == Format.SAFETENSORS:
        config = hf.read_config(path)
        return kind, config, hf.tensors(path, config)
    if variant is None:
        raise CheckpointError(
            f"{path}: an official Orbax checkpoint carries no config; pass the variant (e.g. gemma-2b)"
        )
    tree = official.read_orbax(path)
    config = official.with_vocab_of(tree, preset(variant))
    return kind, config, official.tensors(tree, config, str(path))


def read_config(path: Path, *, variant: str | None = None, format: Format | None = None) -> TransformerConfig:
    """The architecture of any supported checkpoint, read from its config or metadata alone."""
    with errors_named(path):
        return open_checkpoint(path, variant=variant, format=format)[1]


def load_model(
    path: Path,
    *,
    variant: str | None = None,
    format: Format | None = None,
    param_dtype: jnp.dtype = jnp.float32,
    dtype: jnp.dtype = jnp.float32,
    shardings: Shardings | None = None,
) -> Transformer:
    """Load any supported checkpoint, one tensor at a time; parameters that ``shardings`` names a
    sharding for go straight into it, each device receiving only its shard."""
    with errors_named(path):
        kind, config, tensors = open_checkpoint(path, variant=variant, format=format)
        log.info("loading %s checkpoint from %s", kind, path)
        if kind == Format.OURS and shardings is not None:
            return store.restore(path, param_dtype=param_dtype, dtype=dtype, shardings=shardings)
        return load(
            config, tensors, source=str(path), param_dtype=param_dtype, dtype=dtype, shardings=shardings
        )


__all__ = [
    "CheckpointError",
    "Format",
    "detect",
    "errors_named",
    "load_model",
    "open_checkpoint",
    "read_config",
]
