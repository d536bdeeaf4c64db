"""Setting a training up: distributed start, mesh, tokenizer, model (random or imported, straight into
its shardings), and global batches built shard by shard."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from gemma_runtime.checkpoint import load_model, read_config
from gemma_runtime.checkpoint.params import abstract_model, variables
from gemma_runtime.config import CheckpointFormat, Distributed, TrainConfig
from gemma_runtime.devices import local_devices, promised_platform
from gemma_runtime.model import Transformer, TransformerConfig, preset
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import param_shardings, place, variable_sharding
from gemma_runtime.tokenizer import Tokenizer, resolve_tokenizer
from gemma_runtime.train import data, step

log = logging.getLogger(__name__)


class TrainError(ValueError):
    """A config that cannot run on the devices or data present; the message names the field."""


def initialize_distributed(cluster: Distributed | None) -> None:
    """jax.distributed from the operator's variables (gemma_runtime.config.distributed); nothing for one
    process."""
    if cluster is None:
        return
    log.info(
        "distributed: process %d of %d, coordinator %s",
        cluster.process_id,
        cluster.processes,
        cluster.coordinator,
    )
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator,
        num_processes=cluster.processes,
        process_id=cluster.process_id,
    )


def check_devices(environ: Mapping[str, str]) -> None:
    """Raises devices.DeviceError when the TPU or GPU that JAX_PLATFORMS promised is missing (after
    jax.distributed starts: looking at the devices earlier would start JAX alone)."""
    local_devices(promised_platform(environ))


def tokenizer_for(config: TrainConfig) -> Tokenizer:
    model = config.model
    found = resolve_tokenizer(model.tokenizer, model.checkpoint, model.variant)
    if found is not None:
        return found
    raise TrainError(
        "model.tokenizer: no tokenizer.model or tokenizer.json beside the checkpoint; give its path"
    )


def _compute_dtype(config: TrainConfig) -> Any:
    return jax.numpy.bfloat16 if config.training.precision == "bf16" else jax.numpy.float32


def _factory(config: TrainConfig, shape: TransformerConfig) -> Callable[[], Any]:
    """A function making the randomly initialised model, split into its graph and f32 parameters."""

    def create() -> Any:
        m = Transformer(shape, rngs=nnx.Rngs(config.training.seed), dtype=_compute_dtype(config))
        _train_settings(m, config)
        return nnx.split(m, nnx.Param)

    return create


def _train_settings(model: Transformer, config: TrainConfig) -> None:
    """How the model runs in training: its remat policy, attention kernel and layer scan."""
    model.remat = config.training.remat
    model.attention = config.training.attention
    model.scan_layers = config.training.scan_layers


def build_model(config: TrainConfig, mesh: Mesh) -> tuple[nnx.GraphDef[Transformer], Any, TransformerConfig]:
    """The graph and the f32 master parameters, created (or loaded) straight into their shardings."""
    if config.model.checkpoint:
        return _imported(config, mesh, _compute_dtype(config))
    shape = preset(config.model.variant)
    create = _factory(config, shape)
    graphdef, abstract = nnx.eval_shape(create)
    params = jax.jit(lambda: create()[1], out_shardings=param_shardings(abstract, mesh))()
    return graphdef, params, shape


def abstract_params(
    config: TrainConfig, shape: TransformerConfig, mesh: Mesh
) -> tuple[nnx.GraphDef[Transformer], Any]:
    """:func:`build_model`'s graph and parameters as shapes with their shardings, no memory behind them."""
    graphdef, abstract = nnx.eval_shape(_factory(config, shape))
    params = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
        abstract,
        param_shardings(abstract, mesh),
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    return graphdef, params


def _imported(
    config: TrainConfig, mesh: Mesh, compute: Any
) -> tuple[nnx.GraphDef[Transformer], Any, TransformerConfig]:
    """A checkpoint's weights read one tensor at a time, each cast to f32 on the host and placed shard by
    shard: no device ever holds the whole model."""
    path = Path(config.model.checkpoint or "")
    fmt = CheckpointFormat(config.model.format) if config.model.format else None
    shape = read_config(path, variant=config.model.variant, format=fmt)
    shardings = {name: variable_sharding(var, mesh) for name, var in variables(abstract_model(shape)).items()}
    model = load_model(path, variant=config.model.variant, format=fmt, dtype=compute, shardings=shardings.get)
    _train_settings(model, config)
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params, model.config


def device_batch(batch: data.Batch, sharding: NamedSharding) -> step.Batch:
    """Global arrays; each process materialises only the shards its devices hold."""
    arrays = [place(x, sharding) for x in batch.as_tuple()]
    return arrays[0], arrays[1], arrays[2], arrays[3], arrays[4]


def mesh_for(config: TrainConfig, devices: Sequence[jax.Device]) -> Mesh:
    """The config's mesh over ``devices``, checked against the batch it must split."""
    try:
        mesh = make_mesh(
            config.mesh.data,
            config.mesh.fsdp,
            config.mesh.tensor,
            devices,
            expert=config.mesh.expert,
            slices=config.num_slices,
        )
    except ValueError as err:
        raise TrainError(f"mesh: {err}") from None
    h = config.training
    if h.global_batch_size % h.gradient_accumulation_steps:
        raise TrainError(
            f"training.globalBatchSize {h.global_batch_size} is not a multiple of "
            f"training.gradientAccumulationSteps {h.gradient_accumulation_steps}"
        )
    micro, shards = (
        h.global_batch_size // h.gradient_accumulation_steps,
        mesh.shape["data"] * mesh.shape["fsdp"],
    )
    if micro % shards:
        raise TrainError(
            f"training.globalBatchSize: a micro-batch of {micro} rows does not split over the mesh's "
            f"data x fsdp = {shards} devices; use a multiple of {shards * h.gradient_accumulation_steps}"
        )
    log.info(
        "devices: %d x %s, mesh %s, process %d of %d",
        len(devices),
        devices[0].device_kind,
        dict(mesh.shape),
        jax.process_index(),
        jax.process_count(),
    )
    return mesh


def check_vocab(tokenizer: Tokenizer, shape: TransformerConfig) -> None:
    if tokenizer.vocab_size > shape.vocab_size:
        raise TrainError(
            f"model.tokenizer: {tokenizer.vocab_size} tokens but {shape.name} has {shape.vocab_size}"
        )
