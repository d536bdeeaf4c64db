"""gemma.ai/v1alpha1: the GemmaServer and GemmaTraining kinds, and what their CRDs show."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, field_validator

from gemma_operator.api.base import ApiModel
from gemma_operator.api.serving import GemmaServerSpec, GemmaServerStatus
from gemma_operator.api.training import GemmaTrainingSpec, GemmaTrainingStatus

GROUP = "gemma.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "gemma"


MAX_NAME = 63  # every child carries the name as a label value, which Kubernetes limits to 63 characters
NAME_RULE = f"self.metadata.name.size() <= {MAX_NAME}"
NAME_MESSAGE = f"metadata.name must be at most {MAX_NAME} characters: every child is labelled with it"


def _check_name(metadata: dict[str, Any]) -> dict[str, Any]:
    if len(str(metadata.get("name", ""))) > MAX_NAME:
        raise ValueError(NAME_MESSAGE)
    return metadata


class GemmaServer(ApiModel):
    """Serves a Gemma model behind an OpenAI-compatible API, one host per replica."""

    api_version: Literal["gemma.ai/v1alpha1"] = Field("gemma.ai/v1alpha1", alias="apiVersion")
    kind: Literal["GemmaServer"] = "GemmaServer"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: GemmaServerSpec
    status: GemmaServerStatus | None = None

    _name = field_validator("metadata")(_check_name)


class GemmaTraining(ApiModel):
    """Trains or fine-tunes a Gemma model on a TPU slice, one pod per host."""

    api_version: Literal["gemma.ai/v1alpha1"] = Field("gemma.ai/v1alpha1", alias="apiVersion")
    kind: Literal["GemmaTraining"] = "GemmaTraining"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: GemmaTrainingSpec
    status: GemmaTrainingStatus | None = None

    _name = field_validator("metadata")(_check_name)


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    model: type[ApiModel]
    spec: type[ApiModel]
    status: type[ApiModel]
    columns: tuple[Column, ...]
    scale: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


AGE = Column("Age", ".metadata.creationTimestamp", "date")
MODEL = Column("Model", ".spec.model.variant", description="Gemma variant.")
ACCELERATOR = Column("Accelerator", ".status.accelerator.summary", description="Resolved accelerator.")

SERVER = KindInfo(
    kind="GemmaServer",
    plural="gemmaservers",
    short_names=("gsrv",),
    model=GemmaServer,
    spec=GemmaServerSpec,
    status=GemmaServerStatus,
    columns=(
        MODEL,
        ACCELERATOR,
        Column("Replicas", ".spec.replicas", "integer", "Requested replicas."),
        Column("Ready", ".status.readyReplicas", "integer", "Replicas that serve."),
        Column("Phase", ".status.phase", description="Summary of the conditions."),
        Column("Endpoint", ".status.endpoint", description="OpenAI-compatible API URL."),
        AGE,
    ),
    scale=True,
)

TRAINING = KindInfo(
    kind="GemmaTraining",
    plural="gemmatrainings",
    short_names=("gtrain",),
    model=GemmaTraining,
    spec=GemmaTrainingSpec,
    status=GemmaTrainingStatus,
    columns=(
        MODEL,
        ACCELERATOR,
        Column("Phase", ".status.phase", description="Summary of the conditions."),
        Column("Step", ".status.progress.step", "integer", "Last completed step."),
        Column("Loss", ".status.progress.loss", "number", "Loss at the last step."),
        AGE,
    ),
)

KINDS = (SERVER, TRAINING)
