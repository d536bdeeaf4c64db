"""A GemmaServer replica's memory plan, from the runtime's memory model (``gemma_runtime.memory``, the
same arithmetic the runtime checks before it loads): whether the model fits the accelerator, the batch an
unset ``maxBatchSize`` gets, and the data x tensor mesh the runtime is told to use."""

from __future__ import annotations

from typing import Any

from gemma_operator.api.serving import GemmaServerSpec, ServingPlanStatus
from gemma_runtime.memory import PlanError, ServingPlan, host_chips, plan_serving
from gemma_runtime.variants import preset

CPU_SLOTS = 32  # an unset maxBatchSize on CPU, where the memory model knows no memory figure


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
