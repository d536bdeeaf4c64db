"""The trainer's real step, compiled for a whole TPU slice without weights.

The same path as ``train.loop.Training`` takes, abstractly: the model from ``train.setup`` (its remat
policy and compute dtype), its f32 master parameters as shapes in the shardings of the one logical-axis
table, LoRA adapters when asked, AdamW's state beside them (``train.step.abstract_state``), and
``train.step.compile_step`` (gradient accumulation as a scan over micro-batches, the state donated)
lowered for a global batch over every device of every host of the slice, as each process would compile it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import preset
from gemma_runtime.parallel.sharding import batch_sharding
from gemma_runtime.plan.compiled import Program, compile_one
from gemma_runtime.train import flops, lora, setup, step
from gemma_runtime.variants import TransformerConfig


def lower(config: TrainConfig, devices: list[Any], shape: TransformerConfig | None = None) -> Any:
    """The training step lowered for ``devices`` (the whole slice) with the config's global batch;
    ``shape``: the model's instead of the variant's preset (a benchmark's 1- and 2-layer versions)."""
    if config.num_slices != 1:
        raise setup.TrainError("num_slices: a plan compiles one slice")
    mesh = setup.mesh_for(config, devices)
    shape = shape or preset(config.model.variant)
    graphdef, params = setup.abstract_params(config, shape, mesh)
    h = config.training
    settings, trainable, frozen = None, params, {}
    if h.lora is not None:
        settings = lora.settings(params, h.lora.rank, h.lora.alpha)
        replicated = NamedSharding(mesh, PartitionSpec())
        adapters = jax.eval_shape(lora.init, params, settings, jax.random.key(h.seed))
        trainable = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), adapters
        )
        frozen = params
    trainer = step.Trainer(
        graphdef, step.optimizer(h), step.schedule(h), h.gradient_accumulation_steps, settings
    )
    state = step.abstract_state(trainer, trainable, mesh)
    rows = batch_sharding(mesh)
    batch_shape = (h.global_batch_size, h.sequence_length)
    batch = tuple(
        jax.ShapeDtypeStruct(batch_shape, dtype, sharding=rows)
        for dtype in (jnp.int32, jnp.int32, jnp.int32, jnp.int32, jnp.float32)
    )
    jitted: Any = step.compile_step(trainer, state, frozen, rows, mesh)  # a jax.jit: it lowers
    return jitted.lower(state, frozen, batch)


def compile_step(config: TrainConfig, devices: list[Any], shape: TransformerConfig | None = None) -> Program:
    h = config.training
    name = f"train batch {h.global_batch_size} x {h.sequence_length}"
    return compile_one(name, lower(config, devices, shape))


def model_flops(config: TrainConfig, shape: TransformerConfig | None = None) -> float:
    """The step's useful FLOPs over the whole slice (``train.flops``: 6 x the matrix weights per token
    plus attention, remat not counted)."""
    h = config.training
    shape = shape or preset(config.model.variant)
    return flops.train_flops_per_token(shape, h.sequence_length) * h.global_batch_size * h.sequence_length


def batch_shards(config: TrainConfig, devices: int) -> int:
    """How many devices split the batch (data x fsdp): the per-device batch is the micro-batch over this."""
    from gemma_runtime.parallel.mesh import resolve_shape

    data, fsdp, _ = resolve_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    return data * fsdp


def with_device_batch(config: TrainConfig, per_device: int, devices: int) -> TrainConfig:
    """``config`` with a global batch of ``per_device`` rows per batch shard in each micro-batch."""
    h = config.training
    rows = per_device * batch_shards(config, devices) * h.gradient_accumulation_steps
    return config.model_copy(update={"training": h.model_copy(update={"global_batch_size": rows})})
