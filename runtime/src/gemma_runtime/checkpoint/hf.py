"""Hugging Face Gemma checkpoints: a directory with config.json and *.safetensors (sharded or not).

config.json defines the architecture (any Gemma, Gemma 2 or Gemma 3 text config), so pointing at the
directory is enough. Tensors are read one at a time with safetensors' lazy reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from gemma_runtime.checkpoint.params import CheckpointError, Tensor
from gemma_runtime.variants import AttentionType, TransformerConfig

_GENERATION = {"gemma": 1, "gemma2": 2, "gemma3_text": 3, "gemma3": 3}


def _rope(cfg: Mapping[str, Any]) -> tuple[float, float, float]:
    """(global base, local base, global linear scale), from v5 `rope_parameters` or older fields."""
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and "full_attention" in params:
        full, local = params["full_attention"], params.get("sliding_attention", params["full_attention"])
        scale = float(full.get("factor", 1.0)) if full.get("rope_type") == "linear" else 1.0
        return float(full["rope_theta"]), float(local["rope_theta"]), scale
    if isinstance(params, Mapping) and "rope_theta" in params:
        theta = float(params["rope_theta"])
        return theta, float(cfg.get("rope_local_base_freq", theta)), 1.0
    theta = float(cfg.get("rope_theta", 10_000.0))
    scaling = cfg.get("rope_scaling") or {}
    scale = (
        float(scaling.get("factor", 1.0))
        if scaling.get("rope_type", scaling.get("type")) == "linear"
        else 1.0
    )
    return theta, float(cfg.get("rope_local_base_freq", theta)), scale


def _pattern(cfg: Mapping[str, Any], generation: int) -> tuple[AttentionType, ...]:
    kinds = {"sliding_attention": AttentionType.LOCAL, "full_attention": AttentionType.GLOBAL}
    if cfg.get("layer_types"):
        return tuple(kinds[t] for t in cfg["layer_types"])
    if generation == 2:
        return (AttentionType.LOCAL, AttentionType.GLOBAL)
    if generation == 3:
        every = int(cfg.get("sliding_window_pattern", 6))
        return (AttentionType.LOCAL,) * (every - 1) + (AttentionType.GLOBAL,)
    return (AttentionType.GLOBAL,)


def config_from_hf(cfg: Mapping[str, Any], name: str = "hf") -> TransformerConfig:
    if cfg.get("model_type") == "gemma3" and "text_config" in cfg:
        cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
    model_type = cfg.get("model_type")
    if model_type not in _GENERATION:
        valid = ", ".join(_GENERATION)
        raise CheckpointError(
            f"config.json: model_type {model_type!r} is not a Gemma text model; valid: {valid}"
        )
    generation = _GENERATION[str(model_type)]
    heads = int(cfg["num_attention_heads"])
    pattern = _pattern(cfg, generation)
    layers = int(cfg["num_hidden_layers"])
    if len(pattern) == layers and len(set(pattern)) > 1:
        # Keep the shortest repeating unit, so the config reads like the presets.
        for size in range(1, layers + 1):
            if layers % size == 0 and pattern == pattern[:size] * (layers // size):
                pattern = pattern[:size]
                break
    rope_global, rope_local, rope_scale = _rope(cfg)
    local = AttentionType.LOCAL in pattern
    return TransformerConfig(
        name=name,
        generation=generation,
        num_layers=layers,
        embed_dim=int(cfg["hidden_size"]),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        hidden_dim=int(cfg["intermediate_size"]),
        vocab_size=int(cfg["vocab_size"]),
        attention_pattern=pattern,
        sliding_window=int(cfg["sliding_window"]) if local and cfg.get("sliding_window") else None,
        attn_logit_softcap=cfg.get("attn_logit_softcapping"),
        final_logit_softcap=cfg.get("final_logit_softcapping"),
        use_post_attn_norm=generation > 1,
        use_post_ffw_norm=generation > 1,
        use_qk_norm=generation == 3,
        query_pre_attn_scalar=float(cfg["query_pre_attn_scalar"]) if generation > 1 else None,
        rope_base_global=rope_global,
        rope_base_local=rope_local,
        rope_scale_global=rope_scale,
        max_seq_len=int(cfg.get("max_position_embeddings", 8192)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
    )


def _norm_names(generation: int) -> dict[str, str]:
    if generation == 1:  # Gemma 1's `post_attention_layernorm` is the norm before the MLP
        return {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "pre_ffw_norm"}
    return {
        "input_layernorm": "pre_attention_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "pre_ffw_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    }


def convert_tensor(name: str, array: np.ndarray, config: TransformerConfig) -> tuple[str, np.ndarray] | None:
    """One HF tensor (prefix stripped) in our layout; None for tensors we drop (the tied lm_head)."""
    n, k, h, d = config.num_heads, config.num_kv_heads, config.head_dim, config.embed_dim
    if name == "embed_tokens.weight":
        return "embedder.input_embedding", array
    if name == "norm.weight":
        return "final_norm.scale", array
    if name == "lm_head.weight":
        return None
    match = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if not match:
        raise CheckpointError(f"unexpected tensor {name!r}")
    i, rest = match.groups()
    prefix = f"layers.{i}."
    norms = _norm_names(config.generation)
    if rest in norms:
        return prefix + norms[rest] + ".scale", array
    projections: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
        "self_attn.q_proj": ("attn.q", lambda a: a.reshape(n, h, d).transpose(0, 2, 1)),
        "self_attn.k_proj": ("attn.k", lambda a: a.reshape(k, h, d).transpose(0, 2, 1)),
        "self_attn.v_proj": ("attn.v", lambda a: a.reshape(k, h, d).transpose(0, 2, 1)),
        "self_attn.o_proj": ("attn.o", lambda a: a.reshape(d, n, h).transpose(1, 2, 0)),
        "self_attn.q_norm": ("attn.query_norm.scale", lambda a: a),
        "self_attn.k_norm": ("attn.key_norm.scale", lambda a: a),
        "mlp.gate_proj": ("mlp.gate", lambda a: a.T),
        "mlp.up_proj": ("mlp.up", lambda a: a.T),
        "mlp.down_proj": ("mlp.down", lambda a: a.T),
    }
    if rest not in projections:
        raise CheckpointError(f"unexpected tensor {name!r}")
    ours, convert = projections[rest]
    return prefix + ours, np.ascontiguousarray(convert(array))


def _files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / n for n in names]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{directory}: no *.safetensors files (expected a Hugging Face checkpoint directory)"
        )
    return files


def read_config(directory: Path) -> TransformerConfig:
    path = directory / "config.json"
    if not path.exists():
        raise CheckpointError(f"{directory}: no config.json (expected a Hugging Face checkpoint directory)")
    return config_from_hf(json.loads(path.read_text()), name=directory.name)


def _prefix(files: list[Path]) -> str:
    """'model.' for *ForCausalLM, 'language_model.model.' or 'model.language_model.' for multimodal."""
    for file in files:
        with safe_open(str(file), framework="numpy") as reader:
            for key in reader.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key.endswith("embed_tokens.weight"):
                    return str(key)[: -len("embed_tokens.weight")]
    raise CheckpointError(f"{files[0].parent}: no embed_tokens.weight tensor; not a Gemma checkpoint")


def tensors(directory: Path, config: TransformerConfig) -> Iterator[Tensor]:
    """Stream every tensor of the checkpoint in our layout, one at a time."""
    files = _files(directory)
    prefix = _prefix(files)
    for file in files:
        with safe_open(str(file), framework="numpy") as reader:
            for key in reader.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key == "lm_head.weight" or not key.startswith(prefix):
                    continue  # the tied output projection, or a vision tower
                converted = convert_tensor(key[len(prefix) :], reader.get_tensor(key), config)
                if converted is not None:
                    yield converted[0], converted[1], f"{file.name}:{key}"
