"""The trainer's real step, compiled for a whole TPU slice without weights.

The same path as ``train.loop.Training`` takes, abstractly: the model from ``train.setup`` (its remat
policy and compute dtype), its f32 master parameters as shapes in the shardings of the one logical-axis
table, LoRA adapters when asked, AdamW's state beside them (``train.step.abstract_state``), and
``train.step.compile_step`` (gradient accumulation as a scan over micro-batches, the state donated)
lowered for a global batch over every device of every host of the slice, as each process would compile it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import preset, splash
from gemma_runtime.model.transformer import scan_groups
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


def compile_step(
    config: TrainConfig,
    devices: list[Any],
    shape: TransformerConfig | None = None,
    *,
    count_flops: bool = True,
) -> Program:
    """The step as the trainer runs it (its bytes), with FLOPs and bytes accessed that count every layer
    (``count_flops``; else whatever XLA counted, see :func:`counted_whole`)."""
    h = config.training
    name = f"train batch {h.global_batch_size} x {h.sequence_length}"
    if shape is not None:  # a cut-down step (the FLOP count's), named so in the progress log
        name += f", {shape.num_layers} layer{'s' if shape.num_layers > 1 else ''}"
    program = compile_one(name, lower(config, devices, shape))
    if not count_flops or not program.fits or counted_whole(config, shape):
        return program
    return unrolled_flops(program, config, devices, shape)


def counted_whole(config: TrainConfig, shape: TransformerConfig | None = None) -> bool:
    """Whether XLA's FLOP count of the step covers all its work. It does not where the layers run as a
    scan (XLA counts a loop's body once) or where they attend with splash attention (a custom call, which
    XLA counts as no FLOPs): on a TPU slice, every sequence that a splash tile divides."""
    h = config.training
    shape = shape or preset(config.model.variant)
    scanned = h.scan_layers and scan_groups(shape) > 0
    return not scanned and (h.attention == "xla" or splash.unsupported(h.sequence_length) is not None)


def unrolled_flops(
    program: Program, config: TrainConfig, devices: list[Any], shape: TransformerConfig | None = None
) -> Program:
    """``program`` with the FLOPs and bytes accessed of the same step with its layers unrolled and XLA's
    attention, extrapolated from 1- and 2-layer compiles (f(1) + (layers - 1) x (f(2) - f(1)): under XLA's
    attention every Gemma 1-3 layer, local or global, computes the same). Splash attention does less (it
    skips the masked blocks), so the figure is what the XLA program would do, as the model's FLOPs count
    attention over the whole context. The loss's loop over chunks of the sequence (``train.step``) is still
    counted once. Where a 1- or 2-layer step does not fit, the program keeps XLA's own (partial) count, and
    its ``flops_source`` says so."""
    shape = shape or preset(config.model.variant)
    h = config.training.model_copy(update={"scan_layers": False, "attention": "xla"})
    plain = config.model_copy(update={"training": h})
    one, two = (compile_step(plain, devices, shape.replace(num_layers=n), count_flops=False) for n in (1, 2))
    if not (one.fits and two.fits):
        return dataclasses.replace(
            program,
            flops_source="XLA's count of the compiled step: a scan's body once, splash attention as none "
            "(the 1- and 2-layer steps that count every layer do not fit)",
        )
    layers = shape.num_layers - 1
    return dataclasses.replace(
        program,
        flops=one.flops + layers * (two.flops - one.flops),
        bytes_accessed=one.bytes_accessed + layers * (two.bytes_accessed - one.bytes_accessed),
        optimal_seconds=None,  # the estimate was of the scanned program
        flops_source=FLOPS_UNROLLED,
    )


FLOPS_UNROLLED = "the step with unrolled layers and XLA's attention, from 1- and 2-layer compiles"


def model_flops(config: TrainConfig, shape: TransformerConfig | None = None) -> float:
    """The step's useful FLOPs over the whole slice (``train.flops``: 6 x the matrix weights per token
    plus attention, remat not counted)."""
    h = config.training
    shape = shape or preset(config.model.variant)
    return flops.train_flops_per_token(shape, h.sequence_length) * h.global_batch_size * h.sequence_length


def batch_shards(config: TrainConfig, devices: int) -> int:
    """How many devices split the batch (data x fsdp): the per-device batch is the micro-batch over this."""
    from gemma_runtime.parallel.mesh import resolve_shape

    mesh = config.mesh
    data, fsdp, _ = resolve_shape(mesh.data, mesh.fsdp, mesh.tensor, devices, mesh.expert)
    return data * fsdp


def with_device_batch(config: TrainConfig, per_device: int, devices: int) -> TrainConfig:
    """``config`` with a global batch of ``per_device`` rows per batch shard in each micro-batch."""
    h = config.training
    rows = per_device * batch_shards(config, devices) * h.gradient_accumulation_steps
    return config.model_copy(update={"training": h.model_copy(update={"global_batch_size": rows})})
