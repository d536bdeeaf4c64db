"""The serving plan of a ServeConfig, made before anything loads: the model's shape (from the preset or
the checkpoint's own config file), the host's chips (the config's accelerator, else the devices JAX
finds and the memory each reports), and the memory model's answer (``gemma_runtime.memory``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from gemma_runtime.checkpoint import Format, detect, hf, store
from gemma_runtime.config import ServeConfig
from gemma_runtime.devices import local_devices, promised_platform
from gemma_runtime.memory import Chips, Dtype, Mesh, PlanError, ServingPlan, host_chips, plan_serving
from gemma_runtime.variants import TransformerConfig, preset

log = logging.getLogger(__name__)


def model_shape(config: ServeConfig) -> TransformerConfig:
    """The architecture to serve, read from the checkpoint's config file when it carries one."""
    source = config.model
    if source.checkpoint is not None and Path(source.checkpoint).exists():
        path = Path(source.checkpoint)
        kind = Format(source.format) if source.format else detect(path)
        if kind == Format.SAFETENSORS:
            return hf.read_config(path)
        if kind == Format.OURS:
            return store.read_config(path)
    return preset(source.variant)


def resolve_dtype(config: ServeConfig, platform: str) -> Dtype:
    """ "auto" is bf16 on TPU and GPU, f32 on CPU."""
    if config.dtype != "auto":
        return config.dtype
    return "float32" if platform == "cpu" else "bfloat16"


def chips_of(config: ServeConfig, devices: list[Any] | None) -> Chips:
    """The config's accelerator, else the local devices (memory as XLA reports it usable)."""
    acc = config.accelerator
    if acc is not None and acc.type != "cpu":
        return host_chips(acc.type, acc.topology, acc.count, acc.chips_per_host)
    if devices is None:
        return host_chips("cpu")
    stats = devices[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return Chips(f"{len(devices)} x {devices[0].device_kind}", len(devices), limit, reserved_bytes=0)


def plan(
    config: ServeConfig, devices: list[Any] | None = None, platform: str = "cpu", *, auto_batch: bool = False
) -> ServingPlan:
    """Raises ``memory.PlanError`` with the numbers and what would fit. ``auto_batch``: the largest batch
    that fits instead of ``max_batch_size`` (as the operator fills an unset one)."""
    shape = model_shape(config)
    chips = chips_of(config, devices)
    mesh = Mesh(config.mesh.data, config.mesh.tensor, config.mesh.expert) if config.mesh else None
    return plan_serving(
        shape,
        dtype=resolve_dtype(config, platform),
        quantization=config.quantization,
        chips=chips,
        max_len=config.max_sequence_length,
        max_prefill=config.max_prefill_length,
        slots=None if auto_batch else config.max_batch_size,
        mesh=mesh,
    )


def plan_for_host(config: ServeConfig, *, find_devices: bool = True) -> ServingPlan:
    """The plan for this host: its local devices (their count must match the config's accelerator), or
    the config's accelerator alone when ``find_devices`` is False (planning without the hardware)."""
    if not find_devices:
        return plan(config)
    acc = config.accelerator
    # Raises devices.DeviceError when the promised TPU or GPU is missing: never fall back to the CPU.
    devices, platform = local_devices(promised_platform(os.environ, acc.type if acc else None))
    result = plan(config, devices, platform)
    if result.chips.count != len(devices):
        raise PlanError(
            f"accelerator: the config names {result.chips.name} ({result.chips.count} chips per host), but "
            f"JAX found {len(devices)} {platform} device(s) on this host"
        )
    log.info("plan: %s", result.summary())
    return result
