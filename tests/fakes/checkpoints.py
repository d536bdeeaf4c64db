"""Checkpoints as the files a source would hold, made by the tests (nothing comes from a hub): a tiny
Hugging Face folder, a Gemma 1 shaped Hugging Face folder of any size written layer by layer, and the
official Gemma JAX tree of a model's parameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save, save_file

from gemma_runtime.variants import TransformerConfig

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


def hf_config(config: TransformerConfig) -> dict[str, Any]:
    """The config.json of a Gemma 1 architecture (what ``checkpoint.hf`` reads back as ``config``)."""
    if config.generation != 1:
        raise ValueError(
            f"{config.name}: only Gemma 1 shapes are written, got generation {config.generation}"
        )
    return {
        "model_type": "gemma",
        "num_hidden_layers": config.num_layers,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
    }


def write_hf(directory: Path, config: TransformerConfig, seed: int = 0) -> Path:
    """A random Gemma 1 checkpoint in Hugging Face's layout, f32, one safetensors file per layer (plus one
    for the embedding and final norm) and the index: never more than one file's tensors in memory."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    d, f = config.embed_dim, config.hidden_dim
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    top = {"model.embed_tokens.weight": normal(config.vocab_size, d), "model.norm.weight": normal(d)}
    save_file(top, str(directory / "model-embed.safetensors"))
    weight_map = dict.fromkeys(top, "model-embed.safetensors")
    del top
    for i in range(config.num_layers):
        name, prefix = f"model-layer{i}.safetensors", f"model.layers.{i}."
        shapes = {
            "input_layernorm.weight": (d,),
            "post_attention_layernorm.weight": (d,),
            "self_attn.q_proj.weight": (q, d),
            "self_attn.k_proj.weight": (kv, d),
            "self_attn.v_proj.weight": (kv, d),
            "self_attn.o_proj.weight": (d, q),
            "mlp.gate_proj.weight": (f, d),
            "mlp.up_proj.weight": (f, d),
            "mlp.down_proj.weight": (d, f),
        }
        tensors = {prefix + key: normal(*shape) for key, shape in shapes.items()}
        weight_map.update(dict.fromkeys(tensors, name))
        save_file(tensors, str(directory / name))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(hf_config(config)))
    return directory


def official_tree(params: Mapping[str, np.ndarray], config: TransformerConfig) -> dict[str, Any]:
    """Our flat parameters (``checkpoint.params.flat_params``) as the official Gemma JAX tree: separate
    q and stacked kv einsums, the gating einsum transposed ([2, F, D]) after Gemma 1."""
    tree: dict[str, Any] = {
        "embedder": {"input_embedding": params["embedder.input_embedding"]},
        "final_norm": {"scale": params["final_norm.scale"]},
    }
    for i in range(config.num_layers):
        mine = {
            key.removeprefix(f"layers.{i}."): v for key, v in params.items() if key.startswith(f"layers.{i}.")
        }
        attn: dict[str, Any] = {
            "q_einsum": {"w": mine["attn.q"]},
            "kv_einsum": {"w": np.stack([mine["attn.k"], mine["attn.v"]])},
            "attn_vec_einsum": {"w": mine["attn.o"]},
        }
        if config.use_qk_norm:
            attn["_query_norm"] = {"scale": mine["attn.query_norm.scale"]}
            attn["_key_norm"] = {"scale": mine["attn.key_norm.scale"]}
        gating = np.stack([mine["mlp.gate"], mine["mlp.up"]])
        layer: dict[str, Any] = {
            "attn": attn,
            "mlp": {
                "gating_einsum": gating.transpose(0, 2, 1) if config.generation > 1 else gating,
                "linear": mine["mlp.down"],
            },
        }
        for norm in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            if f"{norm}.scale" in mine:
                layer[norm] = {"scale": mine[f"{norm}.scale"]}
        tree[f"layer_{i}"] = layer
    return {"transformer": tree}
