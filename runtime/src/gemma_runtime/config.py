"""The runtime's configuration contract: what `gemma-runtime serve|train --config FILE` reads.

JAX-free, so the operator's tests and the CLI import it cheaply. The operator renders these documents
into a ConfigMap mounted at /etc/gemma/runtime.yaml; tests/contract checks every rendered document
validates here. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class CheckpointFormat(enum.StrEnum):
    OURS = "gemma-runtime"
    SAFETENSORS = "safetensors"  # a Hugging Face directory: config.json + *.safetensors
    ORBAX = "orbax"  # the official Gemma JAX release (needs the variant: it carries no config)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    variant: str = Field(description="Model preset, e.g. gemma2-9b or tiny.")
    checkpoint: str | None = Field(
        None, description="Checkpoint directory (local path); None = random weights."
    )
    format: CheckpointFormat | None = Field(None, description="Checkpoint format; detected when None.")
    tokenizer: str | None = Field(
        None, description="SentencePiece tokenizer.model; default beside the checkpoint."
    )
    instruction_tuned: bool = Field(False, description="Chat requests use Gemma's chat template.")


class Sampling(_Strict):
    temperature: float = Field(1.0, ge=0, le=2)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)


class ServeConfig(_Strict):
    """`gemma-runtime serve`: one process, one model, an OpenAI-compatible HTTP API."""

    kind: Literal["serve"] = "serve"
    model: ModelSource
    served_model_name: str = Field(description="The model id clients send (OpenAI `model` field).")
    max_batch_size: int = Field(32, ge=1, description="Decode slots.")
    max_sequence_length: int = Field(4096, ge=16, description="Prompt plus completion, tokens.")
    max_prefill_length: int = Field(
        1024, ge=16, description="Prompt tokens per engine step (chunked prefill)."
    )
    max_queued_requests: int = Field(256, ge=0, description="Waiting requests before 429.")
    quantization: Literal["none", "int8"] = "none"
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="auto: bf16 on TPU/GPU, f32 on CPU."
    )
    sampling: Sampling = Sampling()
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.max_prefill_length > self.max_sequence_length:
            raise ValueError("max_prefill_length must not exceed max_sequence_length")
        return self


class ConfigError(ValueError):
    """The config file is missing or invalid; the message names the file and each bad field."""


def load_serve_config(path: Path) -> ServeConfig:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        return ServeConfig.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from err
