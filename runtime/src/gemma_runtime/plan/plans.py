"""`gemma-runtime plan`'s Python API: a ServeConfig or a TrainConfig, compiled for a TPU slice.

Serving: the layout the memory model chooses (the operator's choice: mesh, and the largest batch when
``max_batch_size`` is unset), or the config's own; the engine's step compiled for one host's chips for
every chunk bucket; the memory model's bytes beside the compiler's; and the largest number of slots that
fits by compiling. Training: the trainer's step compiled for the whole slice, and the largest per-device
batch that fits by compiling.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from gemma_runtime import accelerators, memory
from gemma_runtime.config import ServeConfig, TrainConfig
from gemma_runtime.plan import serving, training
from gemma_runtime.plan.compiled import Program
from gemma_runtime.plan.report import Plan
from gemma_runtime.plan.search import Largest, largest_fitting
from gemma_runtime.plan.topology import chip, host_devices, slice_devices
from gemma_runtime.serve import plan as serve_plan
from gemma_runtime.serve.plan import chips_of, model_shape, resolve_dtype

log = logging.getLogger(__name__)
Programs = Literal["all", "largest"]
MAX_DEVICE_BATCH = 256  # the per-device batch search stops here


def _layout(
    config: ServeConfig, shape: Any, chips: memory.Chips, auto_batch: bool
) -> tuple[memory.Mesh, int]:
    """The mesh and slots the runtime would use: the memory model's plan, or the config's own layout
    when the model says it does not fit (the compiler gets the last word)."""
    try:
        chosen = serve_plan.plan(config, platform="tpu", auto_batch=auto_batch)
        return chosen.mesh, chosen.slots
    except memory.PlanError as err:
        log.info("the memory model says it does not fit: %s", err)
    dtype = resolve_dtype(config, "tpu")
    mesh = memory.Mesh(config.mesh.data, config.mesh.tensor, config.mesh.expert) if config.mesh else None
    limits = {"max_len": config.max_sequence_length, "max_prefill": config.max_prefill_length}
    slots = None if auto_batch else config.max_batch_size
    meshes = [mesh] if mesh else memory.candidate_meshes(shape, chips.count)
    by_bytes = [
        memory.serving_bytes(
            shape,
            dtype=dtype,
            quantization=config.quantization,
            chips=chips,
            slots=slots or m.data,
            mesh=m,
            **limits,
        )
        for m in meshes
        if slots is None or slots % m.data == 0
    ]
    best = min(by_bytes, key=lambda p: p.total_bytes)
    return best.mesh, best.slots


def compile_workers(tpu_type: str, requested: int | None) -> int | None:
    """How many programs compile side by side for ``tpu_type``: one on chips with SparseCores (two
    concurrent compiles of a program that offloads to them crash libtpu; ``accelerators.TpuGeneration``),
    else ``requested`` (None: one per core)."""
    if accelerators.TPUS[tpu_type].sparse_cores and requested != 1:
        log.info("compiling one program at a time: %s has SparseCores", tpu_type)
        return 1
    return requested


def serving_plan(
    config: ServeConfig,
    *,
    auto_batch: bool = False,
    programs: Programs = "all",
    search: bool = True,
    workers: int | None = None,
) -> Plan:
    """Compile ``config``'s serving step for its TPU accelerator (``config.accelerator``); ``auto_batch``:
    the memory model's largest batch instead of ``max_batch_size`` (as the operator fills an unset one)."""
    acc = config.accelerator
    if acc is None or acc.type not in accelerators.TPUS or acc.topology is None:
        raise memory.PlanError("accelerator: a compiled plan needs a TPU type and topology, e.g. v5e:2x4")
    shape = model_shape(config)
    chips = chips_of(config, None)
    mesh, slots = _layout(config, shape, chips, auto_batch)
    devices = host_devices(slice_devices(acc.type, acc.topology, acc.chips_per_host))
    dtype = resolve_dtype(config, "tpu")
    max_len = min(config.max_sequence_length, shape.max_seq_len)
    step = serving.ServingStep(
        shape,
        dtype,
        config.quantization,
        mesh.data,
        mesh.tensor,
        slots,
        max_len,
        min(config.max_prefill_length, max_len),
        expert=mesh.expert,
    )
    chunks = None if programs == "all" else (0, step.max_prefill)
    compiled = serving.compile_step(step, devices, chunks, compile_workers(acc.type, workers))
    model = memory.serving_bytes(
        shape,
        dtype=dtype,
        quantization=config.quantization,
        chips=chips,
        max_len=max_len,
        max_prefill=step.max_prefill,
        slots=slots,
        mesh=mesh,
    )
    largest, note = None, ""
    proven = False
    if search:
        found = _largest_slots(
            step, devices, compiled[-1], chip(acc.type).usable_bytes, model.kv_bytes_per_slot
        )
        largest = None if found.size is None else found.size * mesh.data
        proven = found.proven
        note = _slots_note(found, mesh.data, step.max_prefill)
    tpu = accelerators.tpu_slice(acc.type, acc.topology, acc.chips_per_host)
    int8 = " int8" if config.quantization == "int8" else ""
    title = (
        f"{shape.name} {dtype}{int8} serving on {acc.type} {acc.topology} (one host of {tpu.chips_per_host} "
        f"chips; mesh {mesh.axes} = {mesh}), {slots} slots x {max_len} tokens, prompt chunks up to "
        f"{step.max_prefill}"
    )
    return Plan(
        kind="serve",
        title=title,
        layout={
            "variant": shape.name,
            "dtype": dtype,
            "quantization": config.quantization,
            "accelerator": acc.type,
            "topology": acc.topology,
            "chips_per_host": tpu.chips_per_host,
            "mesh": {"data": mesh.data, "tensor": mesh.tensor}
            | ({"expert": mesh.expert} if mesh.expert > 1 else {}),
            "slots": slots,
            "max_sequence_length": max_len,
            "max_prefill_length": step.max_prefill,
        },
        chip=chip(acc.type),
        chips=len(devices),
        programs=compiled,
        model_flops=[serving.model_flops(step, _chunk(p.name)) for p in compiled],
        largest=largest,
        largest_proven=proven,
        largest_note=note,
        memory_model={
            "summary": model.summary(),
            "weight_bytes": model.weight_bytes,
            "kv_bytes": model.kv_bytes,
            "workspace_bytes": model.workspace_bytes,
            "total_bytes": model.total_bytes,
            "fits": model.fits,
            "max_slots": model.max_slots,
        },
    )


def _chunk(name: str) -> int:
    return 0 if name == "decode" else int(name.rsplit(maxsplit=1)[-1])


def _largest_slots(
    step: serving.ServingStep, devices: list[Any], at_start: Program, usable: int, per_slot: int
) -> Largest:
    """Slots per data shard: the largest chunk's program is the one that holds the most."""
    start = step.slots // step.data

    def compile_at(local: int) -> Program:
        if local == start:
            return at_start
        trial = dataclasses.replace(step, slots=local * step.data)
        return serving.compile_step(trial, devices, (step.max_prefill,))[0]

    return largest_fitting(compile_at, start, usable, memory.MAX_AUTO_SLOTS // step.data, slope=per_slot)


def _slots_note(found: Largest, data: int, chunk: int) -> str:
    tried = ", ".join(
        f"{size * data} {'fits' if p.fits else 'does not'} ({p.peak_bytes / memory.GiB:.2f} GiB)"
        for size, p in sorted(found.compiled.items())
    )
    if found.size is None:
        return f"largest batch that fits, by compiling the {chunk}-token chunk step: none ({tried})"
    cap = " (the cap of an unset batch)" if found.size == found.limit else ""
    unproven = "" if found.proven else "; the next size was not compiled"
    return (
        f"largest batch that fits, by compiling the {chunk}-token chunk step: {found.size * data} slots{cap} "
        f"(compiled: {tried}{unproven})"
    )


def training_plan(
    config: TrainConfig,
    tpu_type: str,
    topology: str,
    chips_per_host: int | None = None,
    *,
    search: bool = True,
) -> Plan:
    """Compile ``config``'s training step for a whole TPU slice (every host's devices)."""
    tpu = accelerators.tpu_slice(tpu_type, topology, chips_per_host)
    devices = slice_devices(tpu_type, topology, chips_per_host)
    program = training.compile_step(config, devices)
    shards = training.batch_shards(config, len(devices))
    h = config.training
    per_device = h.global_batch_size // h.gradient_accumulation_steps // shards
    largest, note, proven = None, "", False
    if search:

        def compile_at(rows: int) -> Program:
            if rows == per_device:
                return program
            resized = training.with_device_batch(config, rows, len(devices))
            return training.compile_step(resized, devices, count_flops=False)

        # Activations grow with the batch and the state does not: the first guess's bytes per row.
        slope = program.temp_bytes / per_device if program.fits else None
        usable = chip(tpu_type).usable_bytes
        found = largest_fitting(compile_at, per_device, usable, MAX_DEVICE_BATCH, slope=slope)
        largest, proven = found.size, found.proven
        tried = ", ".join(
            f"{size} {'fits' if p.fits else 'does not'} ({p.peak_bytes / memory.GiB:.2f} GiB)"
            for size, p in sorted(found.compiled.items())
        )
        note = (
            f"largest per-device batch (rows per micro-batch per batch shard) that fits: {largest} ({tried})"
        )
    lora = f", LoRA rank {h.lora.rank}" if h.lora else ""
    title = (
        f"{config.model.variant} training on {tpu_type} {topology} ({tpu.hosts} hosts x {tpu.chips_per_host} "
        f"chips), {h.precision} compute, remat {h.remat}, attention {h.attention}, "
        f"{'scanned' if h.scan_layers else 'unrolled'} layers{lora}: global batch {h.global_batch_size} x "
        f"{h.sequence_length} tokens in {h.gradient_accumulation_steps} micro-batch(es), {per_device} rows "
        f"per device per micro-batch"
    )
    return Plan(
        kind="train",
        title=title,
        layout={
            "variant": config.model.variant,
            "accelerator": tpu_type,
            "topology": topology,
            "hosts": tpu.hosts,
            "chips_per_host": tpu.chips_per_host,
            "mesh": config.mesh.model_dump(),
            "precision": h.precision,
            "remat": h.remat,
            "attention": h.attention,
            "scan_layers": h.scan_layers,
            "global_batch_size": h.global_batch_size,
            "sequence_length": h.sequence_length,
            "gradient_accumulation_steps": h.gradient_accumulation_steps,
            "per_device_batch": per_device,
            "lora_rank": h.lora.rank if h.lora else None,
        },
        chip=chip(tpu_type),
        chips=len(devices),
        programs=[program],
        model_flops=[training.model_flops(config)],
        largest=largest,
        largest_proven=proven,
        largest_note=note,
    )
