"""GemmaTraining: sharded training or fine-tuning on a whole TPU slice (or several)."""

from __future__ import annotations

import datetime
import enum
import math
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from gemma_operator.api import cel
from gemma_operator.api.base import ApiModel, FieldError
from gemma_operator.api.common import AcceleratorSpec, ModelSpec, PodOverrides
from gemma_operator.api.conditions import Condition
from gemma_operator.api.serving import ResolvedAccelerator
from gemma_runtime import accelerators
from gemma_runtime.variants import preset

RETRY_EXIT_CODE = 42
"""The runtime exits with this code to ask for a fresh slice; such a restart, like a disruption
(preemption, maintenance, eviction), does not count against failurePolicy.maxRestarts."""


class TrainingAcceleratorSpec(AcceleratorSpec):
    model_config = ConfigDict(
        json_schema_extra=cel.extra([*cel.accelerator_rules(), cel.multislice_rule(), cel.cpu_hosts_rule()])
    )

    num_slices: int = Field(
        1,
        description="Slices trained together over the data-center network (multislice, a JobSet).",
        ge=1,
        le=64,
    )
    hosts: int | None = Field(
        None,
        description="CPU hosts (pods) trained together with jax.distributed, as a TPU slice's hosts are "
        "(cpu only; a slice's hosts follow from its topology). Default 1.",
        ge=1,
        le=16,
    )

    @model_validator(mode="after")
    def _check_slices(self) -> TrainingAcceleratorSpec:
        if self.type != "cpu" and self.hosts is not None:
            raise FieldError(
                "hosts", "hosts applies only to cpu: a TPU slice's hosts follow from its topology"
            )
        tpu = self.slice()
        if self.num_slices > 1 and (tpu is None or tpu.hosts == 1):
            raise FieldError(
                "numSlices", "numSlices > 1 needs a multi-host TPU slice (e.g. v5e 4x4, v5p 2x2x2)"
            )
        return self


class DatasetFormat(enum.StrEnum):
    JSONL = "jsonl"
    TEXT = "text"


class Dataset(ApiModel):
    uri: str = Field(
        description="Training data: a file or folder (gs://, pvc://, file://).",
        pattern=r"^(gs|pvc|file)://.+$",
        max_length=1024,
    )
    format: DatasetFormat = Field(DatasetFormat.JSONL, description="jsonl (one object per line) or text.")
    text_field: str = Field("text", description="JSONL field holding the text.", max_length=253)


class Schedule(enum.StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Lora(ApiModel):
    rank: int = Field(8, description="Rank of the low-rank adapters.", ge=1, le=1024)
    alpha: float = Field(16.0, description="Scaling numerator (updates are scaled by alpha / rank).", gt=0)


class Hyperparameters(ApiModel):
    steps: int = Field(description="Optimizer steps to run.", ge=1)
    global_batch_size: int = Field(8, description="Sequences per optimizer step, all hosts together.", ge=1)
    sequence_length: int = Field(1024, description="Tokens per packed sequence.", ge=16, le=131072)
    learning_rate: float = Field(1e-4, description="Peak learning rate.", gt=0, le=1)
    schedule: Schedule = Field(
        Schedule.COSINE, description="Decay after warm-up: cosine, linear or constant."
    )
    warmup_steps: int = Field(0, description="Linear warm-up steps.", ge=0)
    weight_decay: float = Field(0.0, description="AdamW weight decay.", ge=0, le=1)
    max_grad_norm: float = Field(1.0, description="Global gradient-norm clipping; 0 disables.", ge=0)
    precision: Literal["bf16", "f32"] = Field("bf16", description="Compute dtype (master weights stay f32).")
    remat: Literal["none", "minimal", "full"] = Field(
        "minimal", description="Activation rematerialisation: trade compute for memory."
    )
    gradient_accumulation_steps: int = Field(
        1, description="Micro-batches per optimizer step.", ge=1, le=1024
    )
    seed: int = Field(0, description="Seed for initialisation and data order.", ge=0)
    lora: Lora | None = Field(None, description="Train low-rank adapters instead of all weights.")


NOT_ZERO = cel.extra([cel.rule("self != 0", "must be -1 (fill) or a positive integer")])


class Parallelism(ApiModel):
    """Mesh axes; the product must equal the chips (all slices). -1 fills the rest."""

    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [
                cel.rule(
                    "[self.data, self.fsdp, self.tensor].filter(x, x == -1).size() <= 1",
                    "at most one of data, fsdp and tensor may be -1",
                )
            ]
        )
    )

    data: int = Field(
        1, description="Data-parallel replicas; -1 fills.", ge=-1, le=65536, json_schema_extra=NOT_ZERO
    )
    fsdp: int = Field(
        -1,
        description="Fully sharded data parallelism (weights sharded); -1 fills.",
        ge=-1,
        le=65536,
        json_schema_extra=NOT_ZERO,
    )
    tensor: int = Field(
        1,
        description="Tensor parallelism within a host; -1 fills.",
        ge=-1,
        le=65536,
        json_schema_extra=NOT_ZERO,
    )
    expert: int = Field(
        1,
        description="Expert parallelism within a host: how many chips split a mixture of experts' experts "
        "(must divide them; 1 for other models).",
        ge=1,
        le=65536,
    )

    @field_validator("data", "fsdp", "tensor")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (fill) or a positive integer")
        return value

    @model_validator(mode="after")
    def _one_fill(self) -> Parallelism:
        if [self.data, self.fsdp, self.tensor].count(-1) > 1:
            raise ValueError("at most one of data, fsdp and tensor may be -1")
        return self


class Checkpoints(ApiModel):
    uri: str | None = Field(
        None,
        description="Where checkpoints go (gs:// or pvc://). Without it nothing is saved.",
        max_length=1024,
        pattern=r"^(gs|pvc|file)://.+$",
    )
    interval_steps: int = Field(500, description="Save every this many steps (and at the end).", ge=1)
    keep: int = Field(3, description="Checkpoints to keep; older ones are deleted by the runtime.", ge=1)
    resume: Literal["latest", "never"] = Field("latest", description="Resume from the latest checkpoint.")


class FailurePolicy(ApiModel):
    max_restarts: int = Field(
        3,
        description="Restarts of the whole slice after application errors. Disruptions (a pod with the "
        "DisruptionTarget condition: preemption, maintenance, eviction) and exit code 42 (the runtime asks "
        "for a fresh slice) restart it without counting.",
        ge=0,
        le=1000,
    )


class GemmaTrainingSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=cel.extra([cel.mesh_rule()]))

    model: ModelSpec = Field(
        description="Model to train; with a checkpoint it is a fine-tune.",
        json_schema_extra=cel.extra([cel.IMMUTABLE]),
    )
    accelerator: TrainingAcceleratorSpec = Field(
        description="The TPU slice (or GPUs, or CPU) to train on.",
        json_schema_extra=cel.extra([cel.IMMUTABLE]),
    )
    dataset: Dataset = Field(description="Training data.")
    training: Hyperparameters = Field(description="Optimizer and batch settings.")
    parallelism: Parallelism = Field(
        default_factory=Parallelism,
        description="Device mesh.",
        json_schema_extra=cel.extra([cel.IMMUTABLE]),
    )
    checkpoints: Checkpoints = Field(default_factory=Checkpoints, description="Checkpointing and resume.")
    failure_policy: FailurePolicy = Field(
        default_factory=FailurePolicy, description="Restarts after failures."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        description="Delete the workload this long after it finished (the resource and checkpoints stay).",
        ge=0,
    )
    queue_name: str | None = Field(
        None, description="Kueue LocalQueue (kueue.x-k8s.io/queue-name).", max_length=253
    )
    suspend: bool = Field(False, description="Stop the pods and keep progress; resume by setting false.")
    image: str | None = Field(None, description="Runtime image override.", max_length=1024)
    pod: PodOverrides = Field(default_factory=PodOverrides, description="Overrides for the pods.")

    @model_validator(mode="after")
    def _check_mesh(self) -> GemmaTrainingSpec:
        acc = self.accelerator
        tpu = acc.slice()
        if tpu is not None:
            chips = tpu.chips
        elif acc.type in accelerators.GPUS and acc.count is not None:
            chips = acc.count
        else:
            return self
        total = chips * acc.num_slices
        mesh = self.parallelism
        axes = [mesh.data, mesh.fsdp, mesh.tensor, mesh.expert]
        product = math.prod(a for a in axes if a != -1)
        if total % product or (-1 not in axes and product != total):
            raise FieldError(
                "parallelism",
                f"data * fsdp * tensor * expert = {mesh.data} * {mesh.fsdp} * {mesh.tensor} * {mesh.expert} "
                f"does not fit {total} chips ({chips} per slice * {acc.num_slices} slices)",
            )
        return self

    @model_validator(mode="after")
    def _check_experts(self) -> GemmaTrainingSpec:
        """After the mesh's product: the expert degree divides the model's experts."""
        expert = self.parallelism.expert
        experts = preset(str(self.model.variant)).num_experts
        if expert > 1 and (not experts or experts % expert):
            raise FieldError(
                "parallelism.expert",
                f"{expert} does not divide {self.model.variant}'s {experts} experts "
                "(1 for a model without a mixture of experts)",
            )
        return self


class Progress(ApiModel):
    step: int = Field(0, description="Last completed step.", ge=0)
    total_steps: int = Field(0, description="Steps to run.", ge=0)
    loss: float | None = Field(None, description="Training loss at the last step.")
    tokens_per_second: float | None = Field(None, description="Recent training throughput, all hosts.", ge=0)
    mfu: float | None = Field(None, description="Model-FLOPs utilisation, 0-1.", ge=0)
    eta_seconds: int | None = Field(None, description="Estimated seconds to the last step.", ge=0)


class CheckpointStatus(ApiModel):
    step: int = Field(description="Step of the checkpoint.", ge=0)
    uri: str | None = Field(None, description="Where it is.")
    time: datetime.datetime | None = Field(None, description="When it was saved.")


class Restart(ApiModel):
    time: datetime.datetime = Field(description="When the slice was restarted.")
    reason: str = Field(description="Why, e.g. PodFailed (exit code 1) or DisruptionTarget.")
    counted: bool = Field(description="Counted against failurePolicy.maxRestarts.")


class GemmaTrainingStatus(ApiModel):
    observed_generation: int | None = Field(None, description="Generation this status describes.", ge=0)
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"] | None = Field(
        None, description="One-word summary of the conditions."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Running, Succeeded, Failed, Suspended, Degraded (pods cannot be created or scheduled), "
            "SourcesReady."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    accelerator: ResolvedAccelerator | None = Field(None, description="The slice as resolved.")
    progress: Progress | None = Field(
        None, description="Pulled from the runtime on pod 0; its final figures once it exited."
    )
    last_checkpoint: CheckpointStatus | None = Field(
        None, description="Latest committed checkpoint (one a restart can resume from)."
    )
    restarts: int = Field(0, description="Restarts counted against failurePolicy.maxRestarts.", ge=0)
    attempt: int = Field(
        0, description="Current attempt: every restart of the slice, counted or not, adds one.", ge=0
    )
    restart_history: list[Restart] = Field(
        default_factory=list, description="The latest restarts, counted or not (newest last).", max_length=20
    )
    start_time: datetime.datetime | None = Field(None, description="When the first pod started.")
    completion_time: datetime.datetime | None = Field(None, description="When the training finished.")
