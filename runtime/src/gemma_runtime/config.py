"""The runtime's configuration contract: what `gemma-runtime serve|train --config FILE` reads.

JAX-free, so the operator's tests and the CLI import it cheaply. The operator renders these documents
into a ConfigMap mounted at /etc/gemma/runtime.yaml; tests/contract checks every rendered document
validates here. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class CheckpointFormat(enum.StrEnum):
    OURS = "gemma-runtime"
    SAFETENSORS = "safetensors"  # a Hugging Face directory: config.json + *.safetensors
    ORBAX = "orbax"  # the official Gemma JAX release (needs the variant: it carries no config)


COMPILATION_CACHE_DESCRIPTION = (
    "A folder for JAX's persistent compilation cache (keyed by program, compiler options, jax/XLA "
    "versions and devices, so it may be shared); None compiles every start afresh."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    variant: str = Field(description="Model preset, e.g. gemma2-9b or tiny.")
    checkpoint: str | None = Field(
        None, description="Checkpoint directory (local path); None = random weights."
    )
    format: CheckpointFormat | None = Field(None, description="Checkpoint format; detected when None.")
    tokenizer: str | None = Field(
        None,
        description="tokenizer.model (SentencePiece), tokenizer.json (Hugging Face) or a folder with "
        "either; default: the one beside the checkpoint.",
    )
    instruction_tuned: bool = Field(False, description="Chat requests use Gemma's chat template.")


class Sampling(_Strict):
    temperature: float = Field(1.0, ge=0, le=2)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)


class Accelerator(_Strict):
    """The host's accelerator as the operator names it: a TPU type and topology, a GPU type and count, or
    cpu. The memory model plans with its chips and memory per chip before anything loads."""

    type: str = Field(description="v5e, v5p, v6e, a GKE GPU type (e.g. nvidia-l4) or cpu.")
    topology: str | None = Field(None, description="TPU topology, e.g. 2x4.")
    count: int | None = Field(None, ge=1, description="GPUs per host.")
    chips_per_host: int | None = Field(None, ge=1, description="Picks between 2x4's two shapes on v5e/v6e.")


class ServeMesh(_Strict):
    """How the host's chips split: ``data`` replicas of the model over the decode slots, each split over
    ``expert`` x ``tensor`` chips (a mixture of experts' experts over ``expert``; query heads, KV heads, FFN
    and expert hidden axes, vocabulary over ``tensor``)."""

    data: int = Field(ge=1)
    tensor: int = Field(ge=1)
    expert: int = Field(1, ge=1, description="Expert parallelism: how many chips split the experts.")


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
    accelerator: Accelerator | None = Field(
        None, description="The chips to plan for; None: the devices JAX finds (memory from the device)."
    )
    mesh: ServeMesh | None = Field(None, description="None: chosen by the memory model.")
    compilation_cache: str | None = Field(None, description=COMPILATION_CACHE_DESCRIPTION)
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.max_prefill_length > self.max_sequence_length:
            raise ValueError("max_prefill_length must not exceed max_sequence_length")
        return self


class DataSource(_Strict):
    path: str = Field(description="A file or folder of .jsonl / .txt files.")
    format: Literal["jsonl", "text"] = "jsonl"
    text_field: str = "text"


class Lora(_Strict):
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)


class Hyperparameters(_Strict):
    steps: int = Field(ge=1)
    global_batch_size: int = Field(8, ge=1)
    sequence_length: int = Field(1024, ge=16)
    learning_rate: float = Field(1e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    precision: Literal["bf16", "f32"] = "bf16"
    remat: Literal["none", "minimal", "full"] = "minimal"
    attention: Literal["auto", "xla"] = Field(
        "auto",
        description="auto: splash attention (a Pallas kernel that never holds the score matrix) on TPUs "
        "where a tile of 128, 256 or 512 divides the sequence, XLA's attention elsewhere; xla: always XLA's.",
    )
    scan_layers: bool = Field(
        True,
        description="Run the layers as a scan over their weights stacked by the attention pattern's period: "
        "XLA keeps far fewer activations live than for unrolled layers (Gemma 2 9B, batch 1 x 2048 per chip "
        "on v5e 4x4: 16.57 -> 13.28 GiB per chip). The stack copies the layer weights in the compute dtype "
        "(Gemma 2B, batch 1 x 256 on v5e 2x2: +0.50 GiB bf16, +1.35 GiB f32): false where weights, not "
        "activations, fill the chips.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    lora: Lora | None = None


class MeshShape(_Strict):
    """-1 fills the axis from the devices present."""

    data: int = Field(1, ge=-1)
    fsdp: int = Field(-1, ge=-1)
    tensor: int = Field(1, ge=-1)
    expert: int = Field(1, ge=1, description="Expert parallelism: how many chips split the experts.")


class CheckpointPolicy(_Strict):
    directory: str | None = Field(None, description="Where checkpoints go; None saves nothing.")
    interval_steps: int = Field(500, ge=1)
    keep: int = Field(3, ge=1)
    resume: Literal["latest", "never"] = "latest"


class TrainConfig(_Strict):
    """`gemma-runtime train`: one process per host; the distributed set-up comes from the environment
    (JAX_COORDINATOR_ADDRESS, JAX_PROCESS_COUNT, JAX_PROCESS_ID, MEGASCALE_* for multislice)."""

    kind: Literal["train"] = "train"
    name: str = Field(description="The training's name (logs, metrics).")
    model: ModelSource
    data: DataSource
    training: Hyperparameters
    mesh: MeshShape = MeshShape()
    checkpoints: CheckpointPolicy = CheckpointPolicy()
    num_slices: int = Field(1, ge=1)
    compilation_cache: str | None = Field(None, description=COMPILATION_CACHE_DESCRIPTION)
    host: str = Field("0.0.0.0", description="Address of the progress endpoint (process 0 only).")
    port: int = Field(8000, ge=0, le=65535, description="The /progress, /metrics and /healthz port; 0: none.")


_C = TypeVar("_C", bound=BaseModel)

# The exit code of a run stopped by SIGTERM after saving its state: the operator's Job failure policy
# (gemma_operator.api.training.RETRY_EXIT_CODE) restarts the slice on it, and the restart resumes.
INTERRUPTED_EXIT_CODE = 42


class ConfigError(ValueError):
    """The config file is missing or invalid; the message names the file and each bad field."""


def serve_mesh_flag(text: str) -> dict[str, int]:
    """``--mesh`` of serve and plan: DATAxTENSOR, or DATAxEXPERTxTENSOR (as a plan prints a mesh)."""
    sizes = text.split("x")
    if len(sizes) not in (2, 3) or not all(s.isdigit() for s in sizes):
        raise ConfigError(
            f"--mesh {text!r}: expected DATAxTENSOR (e.g. 2x4) or DATAxEXPERTxTENSOR (e.g. 1x4x2)"
        )
    if len(sizes) == 2:
        return {"data": int(sizes[0]), "tensor": int(sizes[1])}
    return {"data": int(sizes[0]), "expert": int(sizes[1]), "tensor": int(sizes[2])}


def train_mesh_flag(text: str) -> dict[str, int]:
    """``--mesh`` of train and plan --train: data,fsdp,tensor or data,fsdp,tensor,expert."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) not in (3, 4):
        raise ConfigError(
            f"--mesh {text!r}: expected three integers data,fsdp,tensor or four data,fsdp,tensor,expert"
        )
    return dict(zip(("data", "fsdp", "tensor", "expert"), sizes, strict=False))


def _load(path: Path, model: type[_C]) -> _C:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from err


def load_serve_config(path: Path) -> ServeConfig:
    return _load(path, ServeConfig)


def load_train_config(path: Path) -> TrainConfig:
    return _load(path, TrainConfig)


@dataclasses.dataclass(frozen=True)
class Distributed:
    """jax.distributed's arguments for this process."""

    coordinator: str
    processes: int
    process_id: int


def _env_int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    try:
        return int(value or "")
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def distributed(env: Mapping[str, str]) -> Distributed | None:
    """jax.distributed's arguments from the operator's variables; None for a single process.

    One slice: JAX_PROCESS_ID (the Job's completion index). Several slices (a JobSet): the completion
    index repeats in every slice, so the id is MEGASCALE_SLICE_ID x GEMMA_HOSTS_PER_SLICE + TPU_WORKER_ID.
    An explicit JAX_PROCESS_ID wins."""
    address = env.get("JAX_COORDINATOR_ADDRESS")
    count = _env_int(env, "JAX_PROCESS_COUNT") if env.get("JAX_PROCESS_COUNT") else 1
    if not address or count <= 1:
        return None
    if env.get("JAX_PROCESS_ID"):
        process = _env_int(env, "JAX_PROCESS_ID")
    elif env.get("MEGASCALE_SLICE_ID"):
        hosts = _env_int(env, "GEMMA_HOSTS_PER_SLICE")
        process = _env_int(env, "MEGASCALE_SLICE_ID") * hosts + _env_int(env, "TPU_WORKER_ID")
    else:
        raise ConfigError(
            f"JAX_PROCESS_COUNT is {count} but neither JAX_PROCESS_ID nor MEGASCALE_SLICE_ID (with "
            "GEMMA_HOSTS_PER_SLICE and TPU_WORKER_ID) names this process"
        )
    if not 0 <= process < count:
        raise ConfigError(f"process id {process} is outside 0..{count - 1} (JAX_PROCESS_COUNT {count})")
    return Distributed(address, count, process)
