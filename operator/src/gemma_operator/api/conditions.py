"""Status conditions in Kubernetes API conventions, and the types each kind reports."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import Field

from gemma_operator.api.base import ApiModel

# GemmaServer (Degraded and Suspended: both kinds)
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SUSPENDED = "Suspended"
# GemmaTraining
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
# Both: where the weights stand (Pending, Downloading, Loading, Loaded, Failed)
SOURCES_READY = "SourcesReady"
# GemmaServer with spec.inferencePool: whether its InferencePool exists (False: the CRD is not installed)
INFERENCE_POOL_APPLIED = "InferencePoolApplied"

SERVER_CONDITIONS = (READY, PROGRESSING, DEGRADED, SUSPENDED, SOURCES_READY, INFERENCE_POOL_APPLIED)
TRAINING_CONDITIONS = (RUNNING, SUCCEEDED, FAILED, SUSPENDED, DEGRADED, SOURCES_READY)


class Condition(ApiModel):
    """One aspect of the resource's state (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase reason for the last transition.",
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*)?$",
    )
    message: str = Field("", description="Human-readable details.", max_length=32768)
    last_transition_time: datetime.datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation the condition was computed from.", ge=0
    )
