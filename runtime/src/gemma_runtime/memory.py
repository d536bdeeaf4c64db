"""The memory model of a Gemma served on one host's chips: bytes per chip of weights, of KV cache and of
workspace, whether that fits, the largest batch that fits, and the mesh to use.

JAX-free and pure, so the three users share it: the runtime checks a plan before loading anything, the
operator checks a GemmaServer before creating a workload (and fills an unset maxBatchSize), and the
README's "what fits where" table is generated from it. It mirrors the engine exactly: the weight layout of
``serve/layout.py`` (heads, KV heads, FFN hidden axis and vocabulary split over ``tensor`` when it divides
them, a mixture of experts' experts over ``expert``, everything else replicated; every weight replicated
over ``data``) and the KV cache of
``model/attention.py`` (keys and values per slot, a window-sized ring on local layers, an int32 position
per entry; KV heads over ``tensor``, slots over ``data``). The tests check it against the arrays the
engine places on 8 simulated devices.

A TPU chip's usable bytes are 98 % of what XLA's TPU compiler lets one program use (the accelerator
table: v5e 15.75 GiB, v6e 31.25 GiB, v5p 95.74 GiB; the 2 % is the model's margin at the edge); a GPU
keeps 0.25 GiB of its memory for XLA.

Workspace is the temporaries of the engine's larger extreme step (decode only, or decode plus a full
prefill chunk), modelled on XLA:TPU's compiled steps (``gemma-runtime plan``; libtpu 0.0.42.1, whose
buffer assignment shows where they go): per layer, an activation-sized buffer and the chunk's attention
mask over the layer's cache (the scheduler computes them ahead); three f32 copies of one layer's chunk
attention scores; the sampling, which gathers each row's logits over the whole vocabulary and sorts them
(16 bytes per row, rounded up to 8 rows, per vocabulary entry); and 0.125 GiB of small buffers. Over 16
compiled steps of 8 layouts it was 0.1 GiB under to 0.4 GiB over the compiler's temporaries; the tests
hold it within 10 % of the compiler's bytes per chip over the README's table, with the same answer on
whether it fits (``tests/unit/runtime/test_memory_compiler.py``).

A training's state (what its checkpoints save) mirrors ``train/step.py`` and ``train/setup.py``: the
trainable parameters in float32 (master weights, whatever the compute precision), AdamW's first and second
moments in the same dtype, and three int32 counters; the operator sizes a training pod's termination grace
period from it. The tests check it against the state the trainer builds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from gemma_runtime import accelerators, axes
from gemma_runtime.variants import AttentionType, TransformerConfig

GiB = 1 << 30
XLA_RESERVE_BYTES = GiB // 4  # kept from a GPU's memory for XLA (a TPU's usable bytes are the compiler's)
XLA_SMALL_BUFFERS = GiB // 8  # a step's temporaries beyond the modelled ones (indices, constants, scalars)
# A TPU plan keeps 2 % of the compiler's limit free: at the edge the model was up to 0.4 % under the
# compiler (gemma3-12b on v5e 2x2: planned at 15.71 GiB, needed 15.77 of 15.75), so a batch planned
# right up to the limit may not compile.
TPU_PLAN_MARGIN = 0.02
MAX_AUTO_SLOTS = 256  # an unset batch size grows to at most this: each step's time grows with the batch

Dtype = Literal["bfloat16", "float32"]
_ITEMSIZE = {"bfloat16": 2, "float32": 4}


class PlanError(ValueError):
    """A serving plan that cannot work; the message gives the numbers and what would fit."""


@dataclasses.dataclass(frozen=True)
class Chips:
    """One host's accelerators: how many chips and the memory of each (None: unknown, e.g. CPU)."""

    name: str
    count: int
    memory_bytes: int | None
    reserved_bytes: int = XLA_RESERVE_BYTES  # 0 where the figure is already what XLA may use

    @property
    def usable_bytes(self) -> int | None:
        return None if self.memory_bytes is None else self.memory_bytes - self.reserved_bytes

    @property
    def limit(self) -> str:
        """The usable bytes per chip in words, e.g. "15.43 GiB usable of 15.75 GiB"."""
        if self.memory_bytes is None:
            return "unknown"
        usable = f"{(self.memory_bytes - self.reserved_bytes) / GiB:.2f} GiB usable"
        return f"{usable} of {self.memory_bytes / GiB:.2f} GiB" if self.reserved_bytes else usable


def host_chips(
    type: str, topology: str | None = None, count: int | None = None, chips_per_host: int | None = None
) -> Chips:
    """The chips of one host of an accelerator as the API names it (TPU type + topology, GPU type +
    count, or cpu), from the accelerator table."""
    if type in accelerators.TPUS:
        if topology is None:
            raise PlanError(f"accelerator {type}: a TPU needs a topology, e.g. 2x4")
        tpu = accelerators.tpu_slice(type, topology, chips_per_host)
        usable = accelerators.TPUS[type].usable_hbm_bytes  # the compiler's limit, less the plan's margin
        margin = int(usable * TPU_PLAN_MARGIN)
        return Chips(f"{type} {topology}", tpu.chips_per_host, usable, reserved_bytes=margin)
    if type in accelerators.GPUS:
        gpus = count or 1
        accelerators.gpu_machine(type, gpus)
        return Chips(f"{gpus} x {type}", gpus, accelerators.GPUS[type].memory_gib * GiB)
    if type == accelerators.CPU:
        return Chips("cpu", count or 1, None)
    raise PlanError(f"unknown accelerator {type!r}; valid: {', '.join(accelerators.ACCELERATOR_TYPES)}")


def _split(units: int, tensor: int) -> int:
    """How many ways an axis of ``units`` heads or rows is split: by ``tensor`` when it divides them."""
    return tensor if units % tensor == 0 else 1


def weight_bytes_per_chip(
    config: TransformerConfig, dtype: Dtype, quantization: str, tensor: int, expert: int = 1
) -> int:
    """Bytes of the serving weights on each chip (the same on every data replica): every weight of
    ``axes.serving_weights`` split as the logical-axis table splits it over ``expert`` x ``tensor``; under
    int8 the matrices and the embedding hold a byte per value and an f32 scale per output channel."""
    mesh = {"data": 1, "fsdp": 1, "expert": expert, "tensor": tensor}
    int8 = quantization == "int8"
    item = _ITEMSIZE[dtype]
    return sum(w.bytes_per_device(mesh, item, int8) for w in axes.serving_weights(config))


def cache_lengths(config: TransformerConfig, max_len: int) -> list[int]:
    """Entries per slot of each layer's cache: a window-sized ring on local layers."""
    window = config.sliding_window or max_len
    return [min(window, max_len) if t == AttentionType.LOCAL else max_len for t in config.attention_types]


def kv_bytes_per_slot(
    config: TransformerConfig,
    max_len: int,
    dtype: Dtype,
    tensor: int,
    *,
    ring: bool = True,
    positions: bool = True,
) -> int:
    """Bytes of one slot's cache on each chip that holds it: per layer with a cache of its own (a
    KV-shared layer reads its source's), keys and values of its type's KV heads' share at its type's head
    dim, and the int32 position of every entry (replicated over tensor; ``positions`` False leaves them
    out). ``ring`` False: what full-length caches on every layer would take."""
    total = 0
    lengths = cache_lengths(config, max_len) if ring else [max_len] * config.num_layers
    for attn_type, source, length in zip(config.attention_types, config.kv_sources, lengths, strict=True):
        if source is not None:
            continue
        kv_heads = config.kv_heads_of(attn_type)
        local_heads = kv_heads // _split(kv_heads, tensor)
        total += length * (2 * local_heads * config.head_dim_of(attn_type) * _ITEMSIZE[dtype] + 4 * positions)
    return total


def _step_workspace(
    config: TransformerConfig, *, item: int, heads: int, slots: int, max_len: int, chunk: int
) -> int:
    """Temporaries of one engine step with ``chunk`` prompt tokens (0: decode only); see the module
    docstring for where each term comes from."""
    rows = slots + chunk
    # Per layer: an activation-sized buffer and the chunk's attention mask over the layer's cache.
    layers = sum(
        item * rows * config.embed_dim + chunk * (length + chunk) // 2
        for length in cache_lengths(config, max_len)
    )
    scores = 3 * chunk * heads * (max_len + chunk) * 4  # three f32 copies of one layer's chunk scores
    sampled = -(-(slots + (chunk > 0)) // 8) * 8 * config.vocab_size * 16  # [rows to 8, vocabulary] x 16 B
    return layers + scores + sampled


def workspace_bytes(
    config: TransformerConfig,
    dtype: Dtype,
    tensor: int,
    *,
    slots_per_chip: int,
    max_len: int,
    max_prefill: int,
) -> int:
    """Temporaries of the larger of the engine's two extreme steps, decode only and a full prefill chunk
    (see the module docstring), plus XLA's small buffers."""
    item = _ITEMSIZE[dtype]
    heads = config.num_heads // _split(config.num_heads, tensor)
    steps = (
        _step_workspace(config, item=item, heads=heads, slots=slots_per_chip, max_len=max_len, chunk=chunk)
        for chunk in (0, max_prefill)
    )
    return max(steps) + XLA_SMALL_BUFFERS


@dataclasses.dataclass(frozen=True)
class Mesh:
    """A serving mesh: data replicas over the slots, each split over expert x tensor chips."""

    data: int
    tensor: int
    expert: int = 1

    @property
    def axes(self) -> str:
        return "data x tensor" if self.expert == 1 else "data x expert x tensor"

    def __str__(self) -> str:
        middle = f"x{self.expert}" if self.expert > 1 else ""
        return f"{self.data}{middle}x{self.tensor}"

    @property
    def chips(self) -> int:
        return self.data * self.expert * self.tensor


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """Bytes per chip of one serving layout (every figure per chip)."""

    variant: str
    dtype: Dtype
    quantization: str
    chips: Chips
    mesh: Mesh
    slots: int
    max_len: int
    max_prefill: int
    weight_bytes: int
    kv_bytes_per_slot: int
    kv_bytes: int
    workspace_bytes: int
    max_slots: int | None  # the most slots this mesh fits at max_len (None: chip memory unknown)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.workspace_bytes

    @property
    def fits(self) -> bool:
        usable = self.chips.usable_bytes
        return usable is None or self.total_bytes <= usable

    def summary(self) -> str:
        int8 = " int8" if self.quantization == "int8" else ""
        return (
            f"{self.variant} {self.dtype}{int8} on {self.chips.name} "
            f"(mesh {self.mesh.axes} = {self.mesh}), {self.slots} slots x {self.max_len} tokens, per chip: "
            f"weights {self.weight_bytes / GiB:.2f} GiB + KV cache {self.kv_bytes / GiB:.2f} GiB "
            f"({self.kv_bytes_per_slot / 2**20:.1f} MiB per slot) + workspace "
            f"{self.workspace_bytes / GiB:.2f} GiB = {self.total_bytes / GiB:.2f} GiB of {self.chips.limit}"
        )


@dataclasses.dataclass(frozen=True)
class _Workload:
    config: TransformerConfig
    dtype: Dtype
    quantization: str
    chips: Chips
    max_len: int
    max_prefill: int

    def plan(self, mesh: Mesh, slots: int) -> ServingPlan:
        config, dtype = self.config, self.dtype
        weights = weight_bytes_per_chip(config, dtype, self.quantization, mesh.tensor, mesh.expert)
        per_slot = kv_bytes_per_slot(config, self.max_len, dtype, mesh.tensor)

        def workspace(local: int) -> int:
            return workspace_bytes(
                config,
                dtype,
                mesh.tensor,
                slots_per_chip=local,
                max_len=self.max_len,
                max_prefill=self.max_prefill,
            )

        usable = self.chips.usable_bytes
        most: int | None = None
        if usable is not None:  # the largest multiple of data that fits (the total grows with it)
            low, high = 0, MAX_AUTO_SLOTS // mesh.data
            while low < high:
                mid = (low + high + 1) // 2
                fits = weights + mid * per_slot + workspace(mid) <= usable
                low, high = (mid, high) if fits else (low, mid - 1)
            most = low * mesh.data
        local = slots // mesh.data
        return ServingPlan(
            config.name,
            dtype,
            self.quantization,
            self.chips,
            mesh,
            slots,
            self.max_len,
            self.max_prefill,
            weights,
            per_slot,
            local * per_slot,
            workspace(local),
            most,
        )


def candidate_meshes(config: TransformerConfig, chips: int) -> list[Mesh]:
    """Every data x tensor split of ``chips`` whose tensor degree divides the query heads, and for a
    mixture of experts every data x expert x tensor split whose expert degree divides the experts."""
    experts = [
        e for e in range(1, chips + 1) if e == 1 or (config.num_experts and config.num_experts % e == 0)
    ]
    return [
        Mesh(chips // (e * t), t, e)
        for e in experts
        for t in range(1, chips + 1)
        if chips % (e * t) == 0 and config.num_heads % t == 0
    ]


def check_mesh(config: TransformerConfig, chips: int, mesh: Mesh, slots: int | None) -> None:
    """Raise PlanError naming what is wrong with a requested mesh."""
    if mesh.chips != chips:
        raise PlanError(f"mesh {mesh}: {mesh.axes} = {mesh.chips}, but the host has {chips} chips")
    if mesh.expert > 1 and (not config.num_experts or config.num_experts % mesh.expert):
        raise PlanError(
            f"mesh {mesh}: expert {mesh.expert} does not divide {config.name}'s {config.num_experts} experts"
        )
    if config.num_heads % mesh.tensor:
        valid = ", ".join(str(m) for m in candidate_meshes(config, chips))
        raise PlanError(
            f"mesh {mesh}: tensor {mesh.tensor} does not divide {config.name}'s {config.num_heads} query "
            f"heads; valid meshes (data x tensor, or data x expert x tensor): {valid}"
        )
    if slots is not None and slots % mesh.data:
        raise PlanError(
            f"mesh {mesh}: max_batch_size {slots} is not a multiple of the mesh's data degree {mesh.data}"
        )


def plan_serving(
    config: TransformerConfig,
    *,
    dtype: Dtype,
    quantization: str = "none",
    chips: Chips,
    max_len: int,
    max_prefill: int,
    slots: int | None = None,
    mesh: Mesh | None = None,
) -> ServingPlan:
    """The plan for serving ``config`` on ``chips``.

    ``slots`` None: the largest batch that fits (at most MAX_AUTO_SLOTS), on the mesh that holds the most
    (then the fewest bytes per chip). ``mesh`` None: among the meshes that fit, the one with the fewest
    bytes per chip, which is also what each decode step reads (decode is bound by memory bandwidth):
    tensor parallelism for models whose weights dominate, data parallelism over slots where the weights
    are small or the KV heads cannot be split; ties go to the smaller tensor degree (fewer all-reduces).
    Raises PlanError with the numbers and what would fit when nothing does."""
    max_len = min(max_len, config.max_seq_len)
    work = _Workload(config, dtype, quantization, chips, max_len, min(max_prefill, max_len))
    if mesh is not None:
        check_mesh(config, chips.count, mesh, slots)
        meshes = [mesh]
    else:
        meshes = [m for m in candidate_meshes(config, chips.count) if slots is None or slots % m.data == 0]
        if not meshes:
            raise PlanError(
                f"max_batch_size {slots}: no data x tensor split of {chips.count} chips divides it and "
                f"{config.name}'s {config.num_heads} query heads; use a multiple of {chips.count}"
            )
    if slots is None:
        plans = [work.plan(m, m.data) for m in meshes]
        plans = [work.plan(p.mesh, p.max_slots) for p in plans if p.max_slots]
        if not plans:
            raise PlanError(_no_fit(work, meshes, None))
        return max(plans, key=lambda p: (p.slots, -p.total_bytes, -p.mesh.tensor))
    fitting = [p for p in (work.plan(m, slots) for m in meshes) if p.fits]
    if not fitting:
        raise PlanError(_no_fit(work, meshes, slots))
    return min(fitting, key=lambda p: (p.total_bytes, p.mesh.tensor))


def serving_bytes(
    config: TransformerConfig,
    *,
    dtype: Dtype,
    quantization: str = "none",
    chips: Chips,
    max_len: int,
    max_prefill: int,
    slots: int,
    mesh: Mesh,
) -> ServingPlan:
    """The bytes per chip of one given layout, whether it fits or not (``gemma-runtime plan`` sets them
    beside the compiler's)."""
    max_len = min(max_len, config.max_seq_len)
    return _Workload(config, dtype, quantization, chips, max_len, min(max_prefill, max_len)).plan(mesh, slots)


def _no_fit(work: _Workload, meshes: list[Mesh], slots: int | None) -> str:
    """Why nothing fits, with the best layout's numbers, and what would fit instead."""
    best = min((work.plan(m, slots or m.data) for m in meshes), key=lambda p: p.total_bytes)
    lines = [f"does not fit: {best.summary()}"]
    if slots is not None and best.max_slots:
        lines.append(f"at most {best.max_slots} slots fit at {work.max_len} tokens on mesh {best.mesh}")
    usable = work.chips.usable_bytes or 0
    room = usable - best.weight_bytes - best.workspace_bytes
    if room > 0 and best.kv_bytes_per_slot:
        local = max(best.slots // best.mesh.data, 1)
        tokens = int(room // local / (best.kv_bytes_per_slot / work.max_len))
        if tokens >= 16:
            lines.append(f"{best.slots} slots fit with a maximum sequence length of about {tokens}")
    if work.quantization != "int8":
        int8 = dataclasses.replace(work, quantization="int8").plan(best.mesh, best.slots)
        if int8.fits:
            lines.append(f"int8 weights would fit ({int8.total_bytes / GiB:.2f} GiB per chip)")
        elif int8.max_slots:
            lines.append(f"with int8 weights {int8.max_slots} slots would fit")
    if usable and best.weight_bytes >= usable:
        need = math.ceil(best.weight_bytes * best.mesh.tensor * best.mesh.expert / usable)
        lines.append(f"the weights alone need at least {need} chips of this kind")
    lines.append("or use an accelerator with more chips or memory per chip")
    return "; ".join(lines)


# The matrices LoRA adapts (``train/lora.py``'s targets).
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
# The int32 scalars of a training state: its step, AdamW's count and the learning-rate schedule's count.
TRAIN_COUNTERS = 3


def lora_param_count(config: TransformerConfig, rank: int) -> int:
    """Parameters of the LoRA adapters (``train/lora.py``): on every attention and feed-forward matrix a
    layer has, A maps the embedding axis D to ``rank`` and B maps ``rank`` to the matrix's other axes (N x H
    for q and o, K x H for k and v, F for gate, up and down)."""
    total = 0
    for index in range(config.num_layers):
        for name, weight in axes.layer_weights(config, index).items():
            if name in LORA_TARGETS and weight is not None:
                total += rank * sum(weight.shape)  # [D, other] or [other, D]
    return total


def training_state_bytes(config: TransformerConfig, *, lora_rank: int | None = None) -> int:
    """Bytes of a training's whole state, as a checkpoint saves it: the trainable float32 parameters (every
    weight, or only the LoRA adapters; the frozen weights are the run's source, never saved) and AdamW's mu
    and nu beside each, plus the counters."""
    trainable = config.param_count() if lora_rank is None else lora_param_count(config, lora_rank)
    return 3 * 4 * trainable + 4 * TRAIN_COUNTERS


def training_state_bytes_per_host(
    config: TransformerConfig, *, hosts: int, data: int, lora_rank: int | None = None
) -> int:
    """The most bytes one host writes to a checkpoint, a conservative estimate: the state is sharded over
    fsdp x tensor and replicated over ``data``, and Orbax writes each shard once, so at worst the hosts
    holding one data replica (``hosts / data`` of the ``hosts`` of all slices, at least one) write all of
    it between them."""
    writers = max(1, hosts // max(data, 1))
    return math.ceil(training_state_bytes(config, lora_rank=lora_rank) / writers)
