"""GemmaServer: a model served behind an OpenAI-compatible API on one host per replica."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from gemma_operator.api import cel
from gemma_operator.api.base import ApiModel, FieldError
from gemma_operator.api.common import AcceleratorSpec, ModelSpec, ModelVariant, PodOverrides
from gemma_operator.api.conditions import Condition


class Autoscaling(ApiModel):
    """HorizontalPodAutoscaler settings on the runtime's own load metrics."""

    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [
                cel.rule(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                    ".minReplicas",
                ),
                cel.rule(
                    "!(has(self.targetQueueDepth) && has(self.targetBatchOccupancy))",
                    "set at most one of targetQueueDepth and targetBatchOccupancy",
                    ".targetBatchOccupancy",
                ),
            ]
        )
    )

    min_replicas: int = Field(1, description="Fewest replicas.", ge=1, le=1000)
    max_replicas: int = Field(description="Most replicas.", ge=1, le=1000)
    target_queue_depth: int | None = Field(
        None,
        description="Scale to keep this many queued requests per replica (default metric, default 8).",
        ge=1,
    )
    target_batch_occupancy: int | None = Field(
        None,
        description="Scale to keep this percentage of decode slots busy, instead of queue depth.",
        ge=1,
        le=100,
    )

    @model_validator(mode="after")
    def _check(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise FieldError("minReplicas", "minReplicas must not exceed maxReplicas")
        if self.target_queue_depth is not None and self.target_batch_occupancy is not None:
            raise FieldError(
                "targetBatchOccupancy", "set at most one of targetQueueDepth and targetBatchOccupancy"
            )
        return self


DEFAULT_PREFILL = 1024


class ServingLimits(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [
                cel.rule(
                    "!has(self.maxPrefillLength) || self.maxPrefillLength <= self.maxSequenceLength",
                    "maxPrefillLength must not exceed maxSequenceLength",
                    ".maxPrefillLength",
                )
            ]
        )
    )

    max_batch_size: int | None = Field(
        None,
        description="Concurrent sequences (decode slots) per replica. Unset: the largest batch that fits "
        "the accelerator's memory at maxSequenceLength (at most 256; 32 on CPU), shown in status.plan.",
        ge=1,
        le=1024,
    )
    max_sequence_length: int = Field(
        4096, description="Longest prompt plus completion, in tokens.", ge=16, le=131072
    )
    max_prefill_length: int | None = Field(
        None,
        description="Prompt tokens processed per step (chunked prefill). Unset: 1024, or maxSequenceLength "
        "when that is shorter.",
        ge=16,
        le=131072,
    )
    max_queued_requests: int = Field(
        256, description="Requests waiting for a slot before the server answers 429.", ge=0, le=100000
    )

    @model_validator(mode="after")
    def _check(self) -> ServingLimits:
        if self.max_prefill_length is not None and self.max_prefill_length > self.max_sequence_length:
            raise FieldError("maxPrefillLength", "maxPrefillLength must not exceed maxSequenceLength")
        return self

    @property
    def prefill_length(self) -> int:
        """maxPrefillLength, or its default: a chunk never longer than a sequence."""
        return self.max_prefill_length or min(DEFAULT_PREFILL, self.max_sequence_length)


class Sampling(ApiModel):
    """Defaults for requests that do not say."""

    temperature: float = Field(1.0, description="Softmax temperature; 0 is greedy.", ge=0, le=2)
    top_k: int = Field(0, description="Keep the k most likely tokens; 0 keeps all.", ge=0, le=1000)
    top_p: float = Field(1.0, description="Nucleus sampling mass.", gt=0, le=1)
    max_tokens: int = Field(256, description="Tokens to generate when a request gives no max_tokens.", ge=1)


class Quantization(enum.StrEnum):
    NONE = "none"
    INT8 = "int8"


class UpdateStrategy(ApiModel):
    type: Literal["RollingUpdate", "Recreate"] = Field(
        "RollingUpdate", description="RollingUpdate replaces pods a few at a time; Recreate stops all first."
    )
    max_surge: int = Field(
        0,
        description="Extra pods during a rollout. 0 by default: TPU hosts are scarce and a surge pod would "
        "wait for a free slice.",
        ge=0,
    )
    max_unavailable: int = Field(1, description="Pods that may be down during a rollout.", ge=0)


class EndpointPicker(ApiModel):
    """The Inference Gateway's endpoint picker (EPP): the ext_proc service the gateway asks which pod takes
    each request. The operator names it in the InferencePool; it does not deploy it."""

    name: str | None = Field(
        None,
        description="Service of the endpoint picker. Unset: <server name>-epp, the name the inference "
        "extension's Helm chart gives the picker of a pool named like the server.",
        max_length=63,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    )
    port: int = Field(9002, description="Service port of the picker's ext_proc gRPC server.", ge=1, le=65535)
    failure_mode: Literal["FailClose", "FailOpen"] = Field(
        "FailClose",
        description="While the picker does not answer, the gateway refuses requests (FailClose) or sends "
        "them to any pod of the pool (FailOpen).",
    )


class InferencePoolSpec(ApiModel):
    """An InferencePool (Gateway API Inference Extension, inference.networking.k8s.io/v1) selecting this
    server's pods, for GKE Inference Gateway: the operator renders and owns it while the InferencePool
    CRD is installed, and says in the InferencePoolApplied condition when it is not."""

    endpoint_picker: EndpointPicker = Field(
        default_factory=EndpointPicker, description="The endpoint picker the pool names (deployed by you)."
    )


class GemmaServerSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [
                cel.rule(
                    "self.model.variant == 'tiny' || has(self.model.checkpoint)",
                    "model.checkpoint is required for every variant but tiny",
                    ".model.checkpoint",
                ),
                cel.single_host_server_rule(),
            ]
        )
    )

    model: ModelSpec = Field(description="The Gemma model to serve.")
    accelerator: AcceleratorSpec = Field(description="Hardware of each replica (one host).")
    replicas: int = Field(
        1, description="Number of replicas (ignored while autoscaling is set).", ge=0, le=1000
    )
    autoscaling: Autoscaling | None = Field(None, description="Scale replicas on load.")
    serving: ServingLimits = Field(default_factory=ServingLimits, description="Engine and admission limits.")
    quantization: Quantization = Field(Quantization.NONE, description="Weight quantization: none or int8.")
    sampling: Sampling = Field(default_factory=Sampling, description="Default sampling parameters.")
    update_strategy: UpdateStrategy = Field(
        default_factory=UpdateStrategy, description="How spec changes roll out."
    )
    suspend: bool = Field(False, description="Scale to zero and keep the configuration.")
    image: str | None = Field(None, description="Runtime image override.", max_length=1024)
    pod: PodOverrides = Field(default_factory=PodOverrides, description="Overrides for the pods.")
    inference_pool: InferencePoolSpec | None = Field(
        None,
        description="Route through GKE Inference Gateway: an InferencePool over this server's pods, which a "
        "Gateway's HTTPRoute names as its backend and whose endpoint picker routes by each pod's load.",
    )

    @model_validator(mode="after")
    def _check(self) -> GemmaServerSpec:
        if self.model.variant != ModelVariant.TINY and self.model.checkpoint is None:
            raise FieldError("model.checkpoint", "model.checkpoint is required for every variant but tiny")
        tpu = self.accelerator.slice()
        if tpu is not None and tpu.hosts != 1:
            raise FieldError(
                "accelerator.topology",
                f"a GemmaServer replica runs on one host, but {self.accelerator.type} "
                f"{tpu.topology} with {tpu.chips_per_host} chips per host has {tpu.hosts}",
            )
        return self


class ResolvedAccelerator(ApiModel):
    """What the accelerator resolved to in the table."""

    summary: str = Field(description="Short form, e.g. 'v5e 2x4 (1 host x 8 chips)'.")
    chips: int = Field(0, description="Chips or GPUs per replica (per slice for training).", ge=0)
    hosts: int = Field(1, description="Hosts (pods) per replica or slice.", ge=0)
    chips_per_host: int = Field(0, description="Chips or GPUs requested by each pod.", ge=0)
    machine_type: str | None = Field(None, description="GKE machine type of the node pool.")


class ServingStats(ApiModel):
    requests_running: int = Field(0, description="Requests in decode slots, all replicas.", ge=0)
    requests_waiting: int = Field(0, description="Requests queued for a slot, all replicas.", ge=0)
    generated_tokens_per_second: float = Field(0.0, description="Recent generation rate, all replicas.", ge=0)
    time_to_first_token_p50_seconds: float | None = Field(
        None, description="Median time to first token.", ge=0
    )


class ServingPlanStatus(ApiModel):
    """The memory plan of one replica (gemma_runtime.memory, the model the runtime checks too)."""

    mesh: str = Field(
        description="How the host's chips split: data x tensor (data: replicas over slots), or "
        "data x expert x tensor for a mixture of experts split over expert chips."
    )
    max_batch_size: int = Field(description="Decode slots the runtime is configured with.", ge=0)
    max_sequence_length: int = Field(description="Tokens per slot the cache holds.", ge=0)
    weight_bytes_per_chip: int = Field(description="Bytes of weights on each chip.", ge=0)
    kv_cache_bytes_per_chip: int = Field(description="Bytes of KV cache on each chip.", ge=0)
    workspace_bytes_per_chip: int = Field(description="Estimated activations and XLA reserve per chip.", ge=0)
    usable_bytes_per_chip: int | None = Field(None, description="Memory per chip XLA may use; unset on CPU.")
    summary: str = Field(description="The plan in words.")


class GemmaServerStatus(ApiModel):
    observed_generation: int | None = Field(None, description="Generation this status describes.", ge=0)
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Suspended", "Failed"] | None = Field(
        None, description="One-word summary of the conditions."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, Suspended, SourcesReady and, with spec.inferencePool, "
        "InferencePoolApplied.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int = Field(0, description="Pods that exist.", ge=0)
    ready_replicas: int = Field(0, description="Pods that serve.", ge=0)
    selector: str | None = Field(None, description="Label selector of the pods (for the scale subresource).")
    endpoint: str | None = Field(None, description="In-cluster URL of the OpenAI-compatible API.")
    accelerator: ResolvedAccelerator | None = Field(None, description="The accelerator as resolved.")
    plan: ServingPlanStatus | None = Field(None, description="What each chip holds, from the memory model.")
    serving: ServingStats | None = Field(None, description="Figures pulled from the servers' /stats.")
