"""Plans from the runtime's memory model (``gemma_runtime.memory``, the same arithmetic the runtime checks
before it loads): a GemmaServer replica's memory plan (whether the model fits the accelerator, the batch
an unset ``maxBatchSize`` gets, the data x tensor mesh the runtime is told to use), and the termination
grace period a GemmaTraining's pods need to save a checkpoint on SIGTERM."""

from __future__ import annotations

import math
from typing import Any

from gemma_operator.api.serving import GemmaServerSpec, ServingPlanStatus
from gemma_operator.api.training import GemmaTrainingSpec
from gemma_operator.render.placement import resolve
from gemma_runtime.memory import (
    PlanError,
    ServingPlan,
    host_chips,
    plan_serving,
    training_state_bytes_per_host,
)
from gemma_runtime.variants import preset

CPU_SLOTS = 32  # an unset maxBatchSize on CPU, where the memory model knows no memory figure

# The termination grace period of a training pod (README, "SIGTERM and the grace period").
MIN_GRACE_SECONDS = 60  # what every pod gets at least (Kubernetes' default is 30)
GRACE_MARGIN_SECONDS = 30  # the step in flight when SIGTERM comes (the loop saves after it) and the exit
# One host's write rate to its checkpoint storage, assumed low on purpose: gcsfuse's published benchmark
# reaches 4.6 GB/s of sequential writes from one 200 Gbps VM, but a grace period that is too long costs
# nothing (the pod leaves as soon as its save commits) while one too short loses the save.
CHECKPOINT_WRITE_BYTES_PER_SECOND = 200 * 10**6


class DoesNotFitError(ValueError):
    """The model cannot be served on the accelerator as specified; the message names the fields."""


def server_plan(spec: GemmaServerSpec) -> ServingPlan:
    acc, limits = spec.accelerator, spec.serving
    chips = host_chips(acc.type, acc.topology, acc.count, acc.chips_per_host)
    slots = limits.max_batch_size
    if slots is None and chips.usable_bytes is None:
        slots = CPU_SLOTS
    try:
        return plan_serving(
            preset(str(spec.model.variant)),
            dtype="float32" if acc.type == "cpu" else "bfloat16",
            quantization=str(spec.quantization),
            chips=chips,
            max_len=limits.max_sequence_length,
            max_prefill=limits.prefill_length,
            slots=slots,
        )
    except PlanError as err:
        batch = "unset" if limits.max_batch_size is None else str(limits.max_batch_size)
        raise DoesNotFitError(
            f"spec.model.variant {spec.model.variant} (quantization {spec.quantization}) on spec.accelerator "
            f"{chips.name} with spec.serving.maxBatchSize {batch} and spec.serving.maxSequenceLength "
            f"{limits.max_sequence_length}: {err}"
        ) from None


def plan_status(plan: ServingPlan) -> dict[str, Any]:
    return ServingPlanStatus(
        mesh=str(plan.mesh),
        max_batch_size=plan.slots,
        max_sequence_length=plan.max_len,
        weight_bytes_per_chip=plan.weight_bytes,
        kv_cache_bytes_per_chip=plan.kv_bytes,
        workspace_bytes_per_chip=plan.workspace_bytes,
        usable_bytes_per_chip=plan.chips.usable_bytes,
        summary=plan.summary(),
    ).to_api()


def training_grace_seconds(spec: GemmaTrainingSpec) -> int:
    """Seconds a training pod needs between SIGTERM and its exit: finish an asynchronous save already in
    flight, then write the current step's (each a full state, the busiest host's share at the assumed write
    rate), plus the margin; never below MIN_GRACE_SECONDS."""
    acc, mesh = spec.accelerator, spec.parallelism
    resolved = resolve(acc)
    hosts = resolved.hosts * acc.num_slices
    data = mesh.data
    if data == -1:  # the fill: all chips over the other two axes
        data = max(1, resolved.chips * acc.num_slices // (mesh.fsdp * mesh.tensor * mesh.expert))
    lora = spec.training.lora
    per_host = training_state_bytes_per_host(
        preset(str(spec.model.variant)), hosts=hosts, data=data, lora_rank=lora.rank if lora else None
    )
    save = per_host / CHECKPOINT_WRITE_BYTES_PER_SECOND
    return max(MIN_GRACE_SECONDS, math.ceil(GRACE_MARGIN_SECONDS + 2 * save))


def mesh_document(data: int, tensor: int, *, fsdp: int | None = None, expert: int = 1) -> dict[str, int]:
    """The runtime config's ``mesh``: ``expert`` only where it splits a mixture of experts, so that the
    configs (and config hashes) of every other workload stay as they were."""
    axes = {"data": data} | ({} if fsdp is None else {"fsdp": fsdp}) | {"tensor": tensor}
    return axes | ({"expert": expert} if expert > 1 else {})
