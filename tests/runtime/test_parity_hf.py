"""Parity with Hugging Face transformers (PyTorch, CPU, f32, eager attention) on tiny random configs of
each generation: transformers writes the checkpoint with save_pretrained, our safetensors importer reads
it (config.json defines the architecture), and our logits match within 1e-4 relative for the full
forward and for prefill-then-decode through the cache; greedy decoding gives the same tokens as
transformers' generate. Sequences are longer than the sliding window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_runtime.checkpoint import Format, detect, load_model
from gemma_runtime.checkpoint.hf import read_config
from gemma_runtime.model import AttentionType, Transformer
from tests.runtime.convert_cli import convert
from tests.runtime.reference.venvs import ReferenceUnavailableError, require_reference

COMMON = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 1,
}
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma1-mqa": ("gemma", {**COMMON, "num_key_value_heads": 1}),
    "gemma1-mha": ("gemma", {**COMMON, "num_key_value_heads": 4}),
    "gemma2": (
        "gemma2",
        {
            **COMMON,
            "num_key_value_heads": 2,
            "query_pre_attn_scalar": 24,
            "sliding_window": 8,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    ),
    "gemma3": (
        "gemma3_text",
        {
            **COMMON,
            "num_hidden_layers": 6,
            "num_key_value_heads": 2,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,
            "rope_parameters": GEMMA3_ROPE,
        },
    ),
}
TOKENS = np.random.RandomState(0).randint(3, 256, size=(2, 24)).tolist()
PROMPT = TOKENS[0][:10]
NEW_TOKENS = 12


@pytest.fixture(scope="module", params=list(CASES))
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict[str, np.ndarray]]:
    from tests.runtime.reference.hf import run_hf

    name = request.param
    model_type, config = CASES[name]
    workdir = tmp_path_factory.mktemp(name)
    try:
        out = run_hf(
            {
                "model_type": model_type,
                "config": config,
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


def _greedy(model: Transformer, prompt: list[int], steps: int) -> list[int]:
    cache = model.init_cache(1, len(prompt) + steps)
    tokens = jnp.asarray([prompt])
    logits, cache = model(tokens, jnp.arange(len(prompt))[None], cache=cache)
    out = []
    for i in range(steps):
        token = int(jnp.argmax(logits[0, -1]))
        out.append(token)
        position = jnp.asarray([[len(prompt) + i]])
        logits, cache = model(jnp.asarray([[token]]), position, cache=cache)
    return out


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def test_config_json_defines_the_architecture(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    name, checkpoint, _ = reference
    assert detect(checkpoint) == Format.SAFETENSORS
    config = read_config(checkpoint)
    assert config.generation == {"gemma1-mqa": 1, "gemma1-mha": 1, "gemma2": 2, "gemma3": 3}[name]
    if name == "gemma2":
        assert config.attention_types == (AttentionType.LOCAL, AttentionType.GLOBAL) * 2
        assert (config.attn_logit_softcap, config.final_logit_softcap, config.sliding_window) == (
            50.0,
            30.0,
            8,
        )
    if name == "gemma3":
        assert config.attention_types[4:] == (AttentionType.LOCAL, AttentionType.GLOBAL)
        assert (config.rope_base_local, config.rope_base_global, config.rope_scale_global) == (1e4, 1e6, 8.0)
        assert config.use_qk_norm


def test_full_forward_matches_transformers(reference: tuple[str, Path, dict[str, np.ndarray]]) -> None:
    _, checkpoint, out = reference
    model = load_model(checkpoint)
    logits, _ = model(jnp.asarray(TOKENS))
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
    model = load_model(checkpoint)
    assert _greedy(model, PROMPT, NEW_TOKENS) == out["generated"][0].tolist()
    assert jax.devices()[0].platform == "cpu"


def test_convert_cli_writes_our_format_with_the_same_logits(
    reference: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _, checkpoint, out = reference
    logits, _ = convert(checkpoint, tmp_path / "ours")(jnp.asarray(TOKENS))
    assert _relative(np.asarray(logits), out["logits"]) < 1e-4
