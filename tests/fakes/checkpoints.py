"""Tiny checkpoints as the files a source would hold, made by the tests (nothing comes from a hub)."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save

HF_CONFIG = {
    "model_type": "gemma",
    "num_hidden_layers": 1,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 4,
    "vocab_size": 32,
}
HF_SHAPES = {
    "model.embed_tokens.weight": (32, 8),
    "model.norm.weight": (8,),
    "model.layers.0.input_layernorm.weight": (8,),
    "model.layers.0.post_attention_layernorm.weight": (8,),
    "model.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.layers.0.self_attn.k_proj.weight": (4, 8),
    "model.layers.0.self_attn.v_proj.weight": (4, 8),
    "model.layers.0.self_attn.o_proj.weight": (8, 8),
    "model.layers.0.mlp.gate_proj.weight": (16, 8),
    "model.layers.0.mlp.up_proj.weight": (16, 8),
    "model.layers.0.mlp.down_proj.weight": (8, 16),
}


def hf_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of a one-layer Gemma 1 in Hugging Face's names (HF_CONFIG)."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in HF_SHAPES.items()}


def hf_files(tensors: dict[str, np.ndarray], config: dict[str, object] | None = None) -> dict[str, bytes]:
    """config.json and model.safetensors of a Hugging Face checkpoint folder."""
    return {
        "config.json": json.dumps(config or HF_CONFIG).encode(),
        "model.safetensors": save(tensors),
    }
