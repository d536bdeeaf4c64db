"""Checkpoints: importers for the official Gemma JAX tree and Hugging Face safetensors, our own Orbax
format, and one ``load_model`` that recognises each."""

from __future__ import annotations

import logging
from pathlib import Path

import jax.numpy as jnp

from gemma_runtime.checkpoint import hf, official, store
from gemma_runtime.checkpoint.params import CheckpointError, load
from gemma_runtime.config import CheckpointFormat as Format
from gemma_runtime.model import Transformer, preset
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


def load_model(
    path: Path,
    *,
    variant: str | None = None,
    format: Format | None = None,
    param_dtype: jnp.dtype = jnp.float32,
    dtype: jnp.dtype = jnp.float32,
) -> Transformer:
    """Load any supported checkpoint. The official Orbax tree carries no config: ``variant`` names it.
    Errors about a folder that ``gemma-runtime fetch`` filled name the URI it came from."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        uri = fetched(path)
    except SourceError as err:
        raise CheckpointError(str(err)) from err
    try:
        return _load(path, variant, format, param_dtype, dtype)
    except CheckpointError as err:
        if uri is None:
            raise
        raise CheckpointError(f"{uri} (fetched into {path}): {err}") from err


def _load(
    path: Path, variant: str | None, format: Format | None, param_dtype: jnp.dtype, dtype: jnp.dtype
) -> Transformer:
    kind = format or detect(path)
    log.info("loading %s checkpoint from %s", kind, path)
    if kind == Format.OURS:
        return store.restore(path, param_dtype=param_dtype, dtype=dtype)
    if kind == Format.SAFETENSORS:
        config = hf.read_config(path)
        return load(config, hf.tensors(path, config), source=str(path), param_dtype=param_dtype, dtype=dtype)
    if variant is None:
        raise CheckpointError(
            f"{path}: an official Orbax checkpoint carries no config; pass the variant (e.g. gemma-2b)"
        )
    tree = official.read_orbax(path)
    config = official.with_vocab_of(tree, preset(variant))
    return load(
        config,
        official.tensors(tree, config, str(path)),
        source=str(path),
        param_dtype=param_dtype,
        dtype=dtype,
    )


__all__ = ["CheckpointError", "Format", "detect", "load_model"]
