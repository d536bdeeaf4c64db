"""Parity with Hugging Face transformers' Gemma4ForCausalLM (PyTorch, CPU, f32, eager attention) on tiny
random configs of each Gemma 4 kind: dense (global layers with their own head dim, one KV head, keys
doubling as values), E-style (per-layer inputs, the last layers sharing earlier layers' keys and values,
double-wide feed-forwards), mixture of experts, and the 12B's "unified" dense model (transformers'
Gemma4UnifiedForCausalLM). transformers writes the checkpoint with save_pretrained, our safetensors
importer reads it (config.json defines the architecture), and our logits match within 1e-4 relative for
the full forward and for prefill-then-decode through the cache; greedy decoding gives the same tokens as
transformers' generate; `gemma-runtime convert` writes our format with the same logits. A multimodal
wrapper's checkpoint (`text_config`, `model.language_model.*`) loads the same text model. Sequences are
longer than the sliding window. Norm scales are perturbed, and so are the per-layer scalars (a buffer,
which transformers starts at one)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gemma_runtime.checkpoint import Format, detect, load_model
from gemma_runtime.checkpoint.hf import read_config
from gemma_runtime.model import AttentionType, Transformer
from tests.runtime.convert_cli import convert
from tests.runtime.reference.venvs import ReferenceUnavailableError, require_reference

COMMON: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "max_position_embeddings": 512,
    "sliding_window": 8,
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
    "hidden_size_per_layer_input": 0,
    "final_logit_softcapping": 30.0,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 1,
}
CASES: dict[str, dict[str, Any]] = {
    "dense": {**COMMON, "attention_k_eq_v": True, "num_global_key_value_heads": 1},
    "e": {
        **COMMON,
        "hidden_size_per_layer_input": 8,
        "vocab_size_per_layer_input": 256,
        "num_kv_shared_layers": 2,
        "use_double_wide_mlp": True,
    },
    "moe": {
        **COMMON,
        "attention_k_eq_v": True,
        "num_global_key_value_heads": 1,
        "enable_moe_block": True,
        "num_experts": 4,
        "top_k_experts": 2,
        "moe_intermediate_size": 24,  # 2 x 24 != 64: a mistaken orientation of the fused experts shows
    },
    # Gemma 4 12B's kind ("12B Unified"): the dense text model under transformers' gemma4_unified classes.
    "unified": {
        **{k: v for k, v in COMMON.items() if k != "hidden_size_per_layer_input"},
        "attention_k_eq_v": True,
        "num_global_key_value_heads": 1,
    },
}
# transformers' model type of each case's text model, and of its multimodal wrapper.
MODEL_TYPES = {"unified": ("gemma4_unified_text", "gemma4_unified")}
TOKENS = np.random.RandomState(0).randint(3, 256, size=(2, 24)).tolist()
PROMPT = TOKENS[0][:10]
NEW_TOKENS = 12


@pytest.fixture(scope="module", params=list(CASES))
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict[str, np.ndarray]]:
    from tests.runtime.reference.hf import run_hf

    name = request.param
    workdir = tmp_path_factory.mktemp(f"gemma4-{name}")
    try:
        out = run_hf(
            {
                "model_type": MODEL_TYPES.get(name, ("gemma4_text",))[0],
                "config": CASES[name],
                "seed": 0,
                "weight_std": 0.08,
                "tokens": TOKENS,
                "save_dir": str(workdir / "checkpoint"),
                "generate": {"prompt": [PROMPT], "max_new_tokens": NEW_TOKENS},
            },
            workdir,
        )
    except ReferenceUnavailableError as err:
        require_reference(f"Hugging Face reference unavailable: {err}")
    return name, workdir / "checkpoint", out


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _greedy(model: Transformer, prompt: list[int], steps: int) -> list[int]:
    cache = model.init_cache(1, len(prompt) + steps)
    logits, cache = model(jnp.asarray([prompt]), jnp.arange(len(prompt))[None], cache=cache)
    out = []
    for i in range(steps):
        token = int(jnp.argmax(logits[0, -1]))
        out.append(token)
        logits, cache = model(jnp.asarray([[token]]), jnp.asarray([[len(prompt) + i]]), cache=cache)
    return out


def test_config_json_defines_the_architecture(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    name, checkpoint, _ = reference
    assert detect(checkpoint) == Format.SAFETENSORS
    config = read_config(checkpoint)
    assert config.generation == 4
    assert config.attention_types == (AttentionType.LOCAL, AttentionType.LOCAL, AttentionType.GLOBAL) * 2
    assert (config.head_dim_of(AttentionType.LOCAL), config.head_dim_of(AttentionType.GLOBAL)) == (16, 32)
    assert (config.rope_base_local, config.rope_base_global, config.rope_fraction_global) == (1e4, 1e6, 0.25)
    assert (config.final_logit_softcap, config.query_scale, config.norm_plus_one) == (30.0, 1.0, False)
    if name in ("dense", "unified"):
        assert config.attention_k_eq_v
        assert config.kv_heads_of(AttentionType.GLOBAL) == 1
    if name == "e":
        assert (config.per_layer_input_dim, config.num_kv_shared_layers) == (8, 2)
        assert config.kv_sources == (None, None, None, None, 3, 2)
        assert config.kv_heads_of(AttentionType.GLOBAL) == 2  # no k_eq_v: the global KV heads do not apply
    if name == "moe":
        assert (config.num_experts, config.experts_per_token, config.expert_hidden_dim) == (4, 2, 24)


def test_full_forward_matches_transformers(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    _, checkpoint, out = reference
    logits, _ = load_model(checkpoint)(jnp.asarray(TOKENS))
    assert _relative(np.asarray(logits), out["logits"]) < 1e-4


def test_prefill_then_decode_matches_transformers(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    _, checkpoint, out = reference
    model = load_model(checkpoint)
    tokens = jnp.asarray(TOKENS)
    cache = model.init_cache(2, 32)
    logits, cache = model(tokens[:, :11], jnp.broadcast_to(jnp.arange(11), (2, 11)), cache=cache)
    steps = [logits]
    for t in range(11, 24):
        logits, cache = model(tokens[:, t : t + 1], jnp.full((2, 1), t), cache=cache)
        steps.append(logits)
    assert _relative(np.asarray(jnp.concatenate(steps, axis=1)), out["logits"]) < 1e-4


def test_greedy_decode_matches_generate(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    _, checkpoint, out = reference
    assert _greedy(load_model(checkpoint), PROMPT, NEW_TOKENS) == out["generated"][0].tolist()


def test_a_multimodal_checkpoint_loads_its_text_model(
    reference: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Gemma4ForConditionalGeneration's layout: the text config under `text_config`, the text model's
    tensors under `model.language_model.`, beside the vision and audio towers (ignored, and logged)."""
    name, checkpoint, out = reference
    text = json.loads((checkpoint / "config.json").read_text())
    model_type = MODEL_TYPES.get(name, ("gemma4_text", "gemma4"))[1]
    wrapper = {"model_type": model_type, "architectures": ["ForConditionalGeneration"], "text_config": text}
    (tmp_path / "config.json").write_text(json.dumps(wrapper))
    tensors = {
        "model.language_model." + key.removeprefix("model."): value
        for key, value in load_file(checkpoint / "model.safetensors").items()
    }
    tensors["model.vision_tower.encoder.layers.0.mlp.up_proj.linear.weight"] = np.ones((4, 4), np.float32)
    tensors["model.embed_vision.embedding_projection.weight"] = np.ones((64, 4), np.float32)
    tensors["model.audio_tower.layers.0.feed_forward1.ffw_layer_1.linear.weight"] = np.ones(
        (4, 4), np.float32
    )
    save_file(tensors, tmp_path / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="gemma_runtime.checkpoint.hf"):
        logits, _ = load_model(tmp_path)(jnp.asarray(TOKENS))
    assert _relative(np.asarray(logits), out["logits"]) < 1e-4
    assert read_config(tmp_path).generation == 4
    ignored = " ".join(r.getMessage() for r in caplog.records)
    assert "model.vision_tower (1 tensors)" in ignored
    assert "model.audio_tower (1 tensors)" in ignored
    assert "model.embed_vision (1 tensors)" in ignored


def test_convert_cli_writes_our_format_with_the_same_logits(
    reference: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _, checkpoint, out = reference
    converted = convert(checkpoint, tmp_path / "ours")
    assert converted.config == read_config(checkpoint)
    logits, _ = converted(jnp.asarray(TOKENS))
    assert _relative(np.asarray(logits), out["logits"]) < 1e-4
