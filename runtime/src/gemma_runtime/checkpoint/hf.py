"""Hugging Face Gemma checkpoints: a directory with config.json and *.safetensors (sharded or not).

config.json defines the architecture (any Gemma, Gemma 2, Gemma 3 or Gemma 4 text config, or a
multimodal wrapper's ``text_config``), so pointing at the directory is enough. Tensors are read one at a
time with safetensors' lazy reader; a multimodal checkpoint's vision and audio towers are skipped (and
the skip logged).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from gemma_runtime.checkpoint.params import CheckpointError, Tensor
from gemma_runtime.variants import AttentionType, TransformerConfig

log = logging.getLogger(__name__)

# Gemma 4 12B is "12B Unified" (no vision or audio tower): Gemma 4's text model without per-layer inputs or
# experts, under its own model types.
_GENERATION = {
    "gemma": 1,
    "gemma2": 2,
    "gemma3_text": 3,
    "gemma3": 3,
    "gemma4_text": 4,
    "gemma4": 4,
    "gemma4_unified_text": 4,
    "gemma4_unified": 4,
}
_MULTIMODAL = {"gemma3": "gemma3_text", "gemma4": "gemma4_text", "gemma4_unified": "gemma4_unified_text"}
_GEMMA4_GLOBAL_HEAD_DIM = 512  # transformers' default when config.json names none


def _rope(cfg: Mapping[str, Any]) -> tuple[float, float, float]:
    """(global base, local base, global linear scale), from v5 `rope_parameters` or older fields."""
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and "full_attention" in params:
        full, local = params["full_attention"], params.get("sliding_attention", params["full_attention"])
        scaled = full.get("rope_type") in {"linear", "proportional"}  # both divide the frequencies
        scale = float(full.get("factor", 1.0)) if scaled else 1.0
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


def _rope_fractions(cfg: Mapping[str, Any]) -> tuple[float, float]:
    """(global, local) fraction of the head dim that proportional RoPE rotates (1.0: all of it)."""
    params = cfg.get("rope_parameters")
    if not isinstance(params, Mapping) or "full_attention" not in params:
        return 1.0, 1.0

    def fraction(kind: Mapping[str, Any]) -> float:
        if kind.get("rope_type") != "proportional":
            return 1.0
        return float(kind.get("partial_rotary_factor") or 1.0)

    full = params["full_attention"]
    return fraction(full), fraction(params.get("sliding_attention", full))


def _gemma4_global_shape(
    cfg: Mapping[str, Any], pattern: tuple[AttentionType, ...]
) -> tuple[int, int | None]:
    """(head dim, KV heads or None) of Gemma 4's global layers: transformers writes them as
    `per_layer_config` (by layer index); hub configs name `global_head_dim` and
    `num_global_key_value_heads` (the latter only counts where `attention_k_eq_v`)."""
    overrides = cfg.get("per_layer_config") or {}
    layers = int(cfg["num_hidden_layers"])
    globals_ = [i for i in range(layers) if pattern[i % len(pattern)] == AttentionType.GLOBAL]
    found: list[Mapping[str, Any]] = [
        f for f in (overrides.get(str(i), overrides.get(i)) for i in globals_) if f
    ]
    if found:
        head_dims = {int(f.get("head_dim", cfg["head_dim"])) for f in found}
        kv_heads = {int(f.get("num_key_value_heads", cfg["num_key_value_heads"])) for f in found}
        if len(head_dims) > 1 or len(kv_heads) > 1 or len(found) < len(globals_):
            raise CheckpointError("config.json: global layers of different shapes are not supported")
        return head_dims.pop(), kv_heads.pop()
    kv = cfg.get("num_global_key_value_heads") if cfg.get("attention_k_eq_v") else None
    return int(cfg.get("global_head_dim") or _GEMMA4_GLOBAL_HEAD_DIM), None if kv is None else int(kv)


def _gemma4_fields(cfg: Mapping[str, Any], pattern: tuple[AttentionType, ...]) -> dict[str, Any]:
    """The TransformerConfig fields only Gemma 4 sets, from a Gemma4TextConfig."""
    if cfg.get("use_bidirectional_attention") == "all":
        raise CheckpointError("config.json: bidirectional attention (an encoder) is not supported")
    if cfg.get("attention_bias"):
        raise CheckpointError("config.json: attention biases are not supported")
    global_head_dim, global_kv_heads = _gemma4_global_shape(cfg, pattern)
    fraction_global, fraction_local = _rope_fractions(cfg)
    moe = bool(cfg.get("enable_moe_block"))
    return {
        "norm_plus_one": False,
        "use_v_norm": True,
        "use_layer_scalar": True,
        "global_head_dim": global_head_dim,
        "num_global_kv_heads": global_kv_heads,
        "attention_k_eq_v": bool(cfg.get("attention_k_eq_v")),
        "rope_fraction_global": fraction_global,
        "rope_fraction_local": fraction_local,
        "per_layer_input_dim": int(cfg.get("hidden_size_per_layer_input") or 0),
        "per_layer_vocab_size": int(cfg.get("vocab_size_per_layer_input") or cfg["vocab_size"]),
        "num_kv_shared_layers": int(cfg.get("num_kv_shared_layers") or 0),
        "double_wide_shared_mlp": bool(cfg.get("use_double_wide_mlp")),
        "num_experts": int(cfg["num_experts"]) if moe else 0,
        "experts_per_token": int(cfg["top_k_experts"]) if moe else 0,
        "expert_hidden_dim": int(cfg["moe_intermediate_size"]) if moe else 0,
    }


def config_from_hf(cfg: Mapping[str, Any], name: str = "hf") -> TransformerConfig:
    wrapper = cfg.get("model_type")
    if wrapper in _MULTIMODAL and "text_config" in cfg:
        cfg = {**cfg["text_config"], "model_type": _MULTIMODAL[str(wrapper)]}
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
    if generation == 4:
        extra = _gemma4_fields(cfg, pattern)
        if extra["per_layer_input_dim"] and extra["per_layer_vocab_size"] == int(cfg["vocab_size"]):
            extra["per_layer_vocab_size"] = None
    else:
        extra = {}
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
        use_qk_norm=generation >= 3,
        query_pre_attn_scalar=_query_pre_attn_scalar(cfg, generation),
        rope_base_global=rope_global,
        rope_base_local=rope_local,
        rope_scale_global=rope_scale,
        max_seq_len=int(cfg.get("max_position_embeddings", 8192)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        **extra,
    )


def _query_pre_attn_scalar(cfg: Mapping[str, Any], generation: int) -> float | None:
    if generation == 1:
        return None
    if generation == 4:
        return 1.0  # Gemma 4 does not scale its queries
    return float(cfg["query_pre_attn_scalar"])


def _norm_names(generation: int) -> dict[str, str]:
    if generation == 1:  # Gemma 1's `post_attention_layernorm` is the norm before the MLP
        return {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "pre_ffw_norm"}
    names = {
        "input_layernorm": "pre_attention_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "pre_ffw_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    }
    if generation == 4:
        names |= {
            "pre_feedforward_layernorm_2": "pre_ffw_norm_2",
            "post_feedforward_layernorm_1": "post_ffw_norm_1",
            "post_feedforward_layernorm_2": "post_ffw_norm_2",
            "post_per_layer_input_norm": "post_per_layer_norm",
        }
    return names


# Gemma 4's KV-shared layers reuse another layer's keys and values; checkpoints may still carry these.
_UNUSED_WHEN_SHARED = {"self_attn.k_proj", "self_attn.v_proj", "self_attn.k_norm", "self_attn.v_norm"}


def convert_tensor(name: str, array: np.ndarray, config: TransformerConfig) -> list[tuple[str, np.ndarray]]:
    """One HF tensor (prefix stripped) in our layout: usually one of ours, two for a fused one (Gemma
    4's experts' gate and up), none for tensors we drop (the tied lm_head, the keys and values of a
    KV-shared layer)."""
    d = config.embed_dim
    top: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
        "embed_tokens.weight": ("embedder.input_embedding", lambda a: a),
        "norm.weight": ("final_norm.scale", lambda a: a),
        "embed_tokens_per_layer.weight": ("per_layer_embedding", lambda a: a),
        "per_layer_model_projection.weight": ("per_layer_projection", lambda a: a.T),
        "per_layer_projection_norm.weight": ("per_layer_projection_norm.scale", lambda a: a),
    }
    if name in top:
        ours, convert = top[name]
        return [(ours, np.ascontiguousarray(convert(array)))]
    if name == "lm_head.weight":
        return []
    match = re.fullmatch(r"layers\.(\d+)\.(.+?)(\.weight)?", name)
    if not match or int(match.group(1)) >= config.num_layers:
        raise CheckpointError(f"unexpected tensor {name!r}")
    i, rest = int(match.group(1)), match.group(2)
    prefix = f"layers.{i}."
    if match.group(3) is None:  # Gemma 4's tensors without a `.weight` suffix
        return [(prefix + _unsuffixed(rest, name), array)]
    attn_type = config.attention_types[i]
    n, k, h = config.num_heads, config.kv_heads_of(attn_type), config.head_dim_of(attn_type)
    if config.kv_sources[i] is not None and rest in _UNUSED_WHEN_SHARED:
        return []
    norms = _norm_names(config.generation)
    if rest in norms:
        return [(prefix + norms[rest] + ".scale", array)]
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
        "router.proj": ("moe.router", lambda a: a.T),
        "per_layer_input_gate": ("per_layer_gate", lambda a: a.T),
        "per_layer_projection": ("per_layer_projection", lambda a: a.T),
    }
    if rest not in projections:
        raise CheckpointError(f"unexpected tensor {name!r}")
    ours, convert = projections[rest]
    return [(prefix + ours, np.ascontiguousarray(convert(array)))]


def _unsuffixed(rest: str, name: str) -> str:
    """Our name for a Gemma 4 layer tensor that carries no `.weight` (taken as it is; the fused
    experts are ``_experts``')."""
    simple = {
        "layer_scalar": "layer_scalar",
        "router.scale": "moe.router_scale",
        "router.per_expert_scale": "moe.per_expert_scale",
    }
    if rest not in simple:
        raise CheckpointError(f"unexpected tensor {name!r}")
    return simple[rest]


def _experts(name: str, array: np.ndarray, config: TransformerConfig) -> list[tuple[str, np.ndarray]]:
    """Gemma 4's experts: gate_up_proj [E, 2M, D] -> gate, up [E, D, M]; down_proj [E, D, M] -> [E, M, D]."""
    i, kind = name.split(".")[1], name.rsplit(".", 1)[1]
    prefix = f"layers.{i}.moe."
    if kind == "down_proj":
        return [(prefix + "down", np.ascontiguousarray(array.transpose(0, 2, 1)))]
    m = config.expert_hidden_dim
    if array.shape[1] != 2 * m:
        raise CheckpointError(f"{name}: shape {array.shape}, expected [E, {2 * m}, D]")
    return [
        (prefix + "gate", np.ascontiguousarray(array[:, :m].transpose(0, 2, 1))),
        (prefix + "up", np.ascontiguousarray(array[:, m:].transpose(0, 2, 1))),
    ]


def _convert(name: str, array: np.ndarray, config: TransformerConfig) -> list[tuple[str, np.ndarray]]:
    if re.fullmatch(r"layers\.\d+\.experts\.(gate_up_proj|down_proj)", name):
        return _experts(name, array, config)
    return convert_tensor(name, array, config)


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
    towers: dict[str, int] = {}  # tensors of a multimodal checkpoint's other parts, by part
    for file in files:
        with safe_open(str(file), framework="numpy") as reader:
            for key in reader.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key == "lm_head.weight":
                    continue  # the tied output projection
                if not key.startswith(prefix):  # a vision or audio tower, its embedder
                    part = key[: key.find(".", key.find(".") + 1)] if key.count(".") > 1 else key
                    towers[part] = towers.get(part, 0) + 1
                    continue
                for ours, array in _convert(key[len(prefix) :], reader.get_tensor(key), config):
                    yield ours, array, f"{file.name}:{key}"
    if towers:
        parts = ", ".join(f"{part} ({count} tensors)" for part, count in sorted(towers.items()))
        log.info("%s: loaded the text model only; ignored %s", directory, parts)
