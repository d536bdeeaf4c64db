"""Spec pieces both kinds share: the model and its weights, the accelerator, and pod overrides."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gemma_operator.api import cel
from gemma_operator.api.base import ApiModel, FieldError
from gemma_runtime import accelerators

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = (
    rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"  # Kubernetes quantity
)
URI_PATTERN = r"^(gs|hf|pvc|file)://.+$"


def _quantity(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One error at the field itself, not one per branch of the union (``cpu.int``, ``cpu.constrained-str``:
    paths that name no field)."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "quantity", "must be a Kubernetes quantity: an integer or a string such as 500m, 2Gi or 1.5"
        ) from None


Quantity = Annotated[int | Annotated[str, Field(pattern=QUANTITY_PATTERN)], WrapValidator(_quantity), Field()]


class ModelVariant(enum.StrEnum):
    GEMMA_2B = "gemma-2b"
    GEMMA_7B = "gemma-7b"
    GEMMA2_2B = "gemma2-2b"
    GEMMA2_9B = "gemma2-9b"
    GEMMA2_27B = "gemma2-27b"
    GEMMA3_1B = "gemma3-1b"
    GEMMA3_4B = "gemma3-4b"
    GEMMA3_12B = "gemma3-12b"
    GEMMA3_27B = "gemma3-27b"
    GEMMA4_E2B = "gemma4-e2b"
    GEMMA4_E4B = "gemma4-e4b"
    GEMMA4_12B = "gemma4-12b"
    GEMMA4_31B = "gemma4-31b"
    GEMMA4_26B_A4B = "gemma4-26b-a4b"
    TINY = "tiny"


class CheckpointFormat(enum.StrEnum):
    ORBAX = "orbax"
    SAFETENSORS = "safetensors"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(description="Name of the Secret.", max_length=253)
    key: str = Field("token", description="Key inside the Secret.", max_length=253)


class CheckpointSource(ApiModel):
    """Where the weights come from."""

    uri: str = Field(
        description=(
            "Location of the checkpoint: gs://bucket/path (Cloud Storage), hf://org/model[@revision] "
            "(Hugging Face Hub), pvc://claim/path (a PersistentVolumeClaim) or file:///path "
            "(inside the image)."
        ),
        pattern=URI_PATTERN,
        max_length=1024,
    )
    format: CheckpointFormat | None = Field(
        None,
        description="orbax (the official JAX release, our own checkpoints) or safetensors (Hugging Face); "
        "detected from the files when omitted.",
    )
    secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret holding an access token for gated downloads (e.g. a Hugging Face token). "
        "Passed to the downloader as an environment variable from the Secret, never copied.",
    )


class TokenizerSource(ApiModel):
    uri: str = Field(
        description="Location of the tokenizer: a SentencePiece tokenizer.model, a Hugging Face "
        "tokenizer.json, or (hf://) a repository holding either (same schemes as checkpoint.uri).",
        pattern=URI_PATTERN,
        max_length=1024,
    )


class ModelCache(ApiModel):
    """Where hf:// downloads are kept. The fetch skips files already there and verified, so a kept cache
    means restarts and extra replicas download nothing."""

    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [
                cel.rule(
                    "!(has(self.claimName) && has(self.sizeLimit))",
                    "set claimName or sizeLimit, not both",
                    field_path=".sizeLimit",
                )
            ]
        )
    )

    claim_name: str | None = Field(
        None,
        description="A PersistentVolumeClaim to keep downloads in, across pod restarts and shared by "
        "replicas (ReadWriteMany, e.g. Filestore, for replicas on several nodes; fetches into one folder "
        "take turns). Without it each pod downloads into a node-local emptyDir, kept across container "
        "restarts.",
        max_length=253,
        pattern=NAME_PATTERN,
    )
    size_limit: Quantity | None = Field(
        None,
        description="Size of the node-local cache (emptyDir sizeLimit, also requested as ephemeral-storage "
        "so the scheduler picks a node with room, e.g. a local SSD pool). Only without claimName.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelCache:
        if self.claim_name is not None and self.size_limit is not None:
            raise FieldError(
                "sizeLimit", "set claimName or sizeLimit, not both: sizeLimit is for the node-local cache"
            )
        return self


class ModelSpec(ApiModel):
    """Which Gemma, and where its weights and tokenizer are."""

    variant: ModelVariant = Field(
        description="Gemma variant: gemma-2b, gemma-7b (Gemma 1), gemma2-2b/9b/27b, gemma3-1b/4b/12b/27b, "
        "gemma4-e2b/e4b/12b/31b, gemma4-26b-a4b (mixture of experts), or tiny (a small random model for "
        "trials on CPU)."
    )
    instruction_tuned: bool = Field(
        False, description="The weights are instruction-tuned (-it): chat requests use Gemma's chat template."
    )
    checkpoint: CheckpointSource | None = Field(
        None, description="Weights to load. Required for serving any variant but tiny; optional for training."
    )
    tokenizer: TokenizerSource | None = Field(
        None,
        description="Tokenizer; defaults to the tokenizer.model or tokenizer.json found beside the "
        "checkpoint.",
    )
    cache: ModelCache | None = Field(
        None, description="Where hf:// downloads are kept (default: a node-local emptyDir per pod)."
    )


class AcceleratorSpec(ApiModel):
    """The hardware of one replica: a TPU slice, GPUs of one type, or CPU."""

    model_config = ConfigDict(json_schema_extra=cel.extra(cel.accelerator_rules()))

    type: str = Field(
        description="TPU generation (v5e, v5p, v6e), GPU type as GKE labels it (e.g. nvidia-l4, "
        "nvidia-h100-80gb), or cpu.",
        json_schema_extra={"enum": list[JsonValue](accelerators.ACCELERATOR_TYPES)},
    )
    topology: str | None = Field(
        None,
        description="TPU slice topology, e.g. 2x4 or 4x4 (v5e, v6e) or 2x2x2 (v5p). Required for TPUs.",
        max_length=16,
        pattern=r"^[0-9]+x[0-9]+(x[0-9]+)?$",
    )
    chips_per_host: int | None = Field(
        None,
        description="TPU chips per host. Only 2x4 on v5e/v6e has a choice: 8 (one ct5lp/ct6e -8t host, the "
        "default) or 4 (two -4t hosts).",
        ge=1,
        le=8,
    )
    count: int | None = Field(None, description="GPUs per replica (GPU types only).", ge=1, le=16)
    spot: bool = Field(False, description="Run on Spot capacity (cloud.google.com/gke-spot).")
    reservation: str | None = Field(
        None, description="Consume this GKE reservation (cloud.google.com/reservation-name).", max_length=253
    )

    @model_validator(mode="after")
    def _check(self) -> AcceleratorSpec:
        if self.type not in accelerators.ACCELERATOR_TYPES:
            valid = ", ".join(accelerators.ACCELERATOR_TYPES)
            raise FieldError("type", f"type {self.type!r} is unknown; valid: {valid}")
        is_tpu, is_gpu = self.type in accelerators.TPUS, self.type in accelerators.GPUS
        if is_tpu and self.topology is None:
            raise FieldError("topology", "topology is required for TPU types (e.g. 2x4 for v5e)")
        if not is_tpu and self.topology is not None:
            raise FieldError("topology", "topology applies only to TPU types (v5e, v5p, v6e)")
        if not is_tpu and self.chips_per_host is not None:
            raise FieldError("chipsPerHost", "chipsPerHost applies only to TPU types")
        if is_gpu and self.count is None:
            raise FieldError("count", "count is required for GPU types")
        if not is_gpu and self.count is not None:
            raise FieldError("count", "count applies only to GPU types")
        if self.spot and self.reservation:
            raise FieldError("reservation", "spot and reservation are exclusive")
        try:
            if is_tpu:
                assert self.topology is not None
                accelerators.tpu_slice(self.type, self.topology, self.chips_per_host)
            if is_gpu:
                assert self.count is not None
                accelerators.gpu_machine(self.type, self.count)
        except accelerators.UnknownAcceleratorError as err:
            raise FieldError(err.field, str(err)) from err
        return self

    def slice(self) -> accelerators.TpuSlice | None:
        if self.type not in accelerators.TPUS or self.topology is None:
            return None
        return accelerators.tpu_slice(self.type, self.topology, self.chips_per_host)


class KeySelector(ApiModel):
    name: str = Field(description="Name of the Secret or ConfigMap.", max_length=253)
    key: str = Field(description="Key to read.", max_length=253)
    optional: bool | None = Field(None, description="Start even when the key is missing.")


class EnvVarSource(ApiModel):
    secret_key_ref: KeySelector | None = Field(None, description="Read the value from a Secret key.")
    config_map_key_ref: KeySelector | None = Field(None, description="Read the value from a ConfigMap key.")


class EnvVar(ApiModel):
    """An environment variable for the runtime container: a literal value or a Secret/ConfigMap key."""

    model_config = ConfigDict(
        json_schema_extra=cel.extra(
            [cel.rule("has(self.value) != has(self.valueFrom)", "set exactly one of value and valueFrom")]
        )
    )

    name: str = Field(description="Variable name.", pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=128)
    value: str | None = Field(None, description="Literal value.", max_length=4096)
    value_from: EnvVarSource | None = Field(None, description="Value from a Secret or ConfigMap key.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: set exactly one of value and valueFrom")
        return self


class Toleration(ApiModel):
    key: str | None = Field(
        None, description="Taint key; empty with operator Exists matches all.", max_length=253
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value for operator Equal.", max_length=253)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(None, description="For NoExecute: seconds to stay bound.", ge=0)


class Resources(ApiModel):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Extra or overriding resource requests (e.g. cpu, memory)."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Extra or overriding resource limits."
    )


class PodOverrides(ApiModel):
    """What users change on GKE pods; everything else is rendered by the operator."""

    service_account_name: str | None = Field(
        None, description="ServiceAccount of the pods (Workload Identity for gs:// access).", max_length=253
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node selector terms, added to the accelerator's."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations, added to the accelerator's.", max_length=32
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables for the runtime.", max_length=64
    )
    resources: Resources | None = Field(
        None, description="Resource requests and limits added to the defaults."
    )
    priority_class_name: str | None = Field(None, description="PriorityClass of the pods.", max_length=253)
    run_as_root: bool = Field(
        False,
        description="Run the runtime container as UID 0, for nodes whose container runtime leaves TPU "
        "device nodes owned by root (containerd without device_ownership_from_security_context): still "
        "no capabilities, no privilege escalation, a read-only root filesystem, and the fetch containers "
        "stay non-root. Such pods meet the baseline Pod Security Standard, not restricted.",
    )
