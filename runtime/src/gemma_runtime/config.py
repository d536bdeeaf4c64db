"""The runtime's configuration contract, JAX-free so the operator's tests and the CLI can import it
cheaply. (ServeConfig and TrainConfig join it with the serving and training issues.)"""

from __future__ import annotations

import enum


class CheckpointFormat(enum.StrEnum):
    OURS = "gemma-runtime"
    SAFETENSORS = "safetensors"  # a Hugging Face directory: config.json + *.safetensors
    ORBAX = "orbax"  # the official Gemma JAX release (needs the variant: it carries no config)
