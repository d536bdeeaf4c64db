"""Checkpoint plumbing without a reference: Hugging Face configs of every vintage map to the right
architecture (v5 rope_parameters, older rope_scaling, multimodal Gemma 3 wrappers); the official tree's
fused and transposed layouts map to ours; our format round-trips; and every error names the tensor or
the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from gemma_runtime.checkpoint import CheckpointError, Format, detect, load_model, official, store
from gemma_runtime.checkpoint.hf import config_from_hf
from gemma_runtime.checkpoint.params import flat_params, load
from gemma_runtime.model import AttentionType, Transformer, tiny_config
from tests.fakes.checkpoints import HF_CONFIG

HF_GEMMA3 = {
    "model_type": "gemma3_text",
    "num_hidden_layers": 12,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 262_208,
    "query_pre_attn_scalar": 16,
    "sliding_window": 512,
}


def test_gemma3_v5_rope_parameters() -> None:
    config = config_from_hf(
        {
            **HF_GEMMA3,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
        }
    )
    assert (config.rope_base_global, config.rope_base_local, config.rope_scale_global) == (1e6, 1e4, 8.0)
    assert config.attention_pattern == (AttentionType.LOCAL,) * 5 + (AttentionType.GLOBAL,)
    assert config.vocab_size == 262_208


def test_gemma3_older_rope_fields_and_multimodal_wrapper() -> None:
    text = {
        **HF_GEMMA3,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }
    config = config_from_hf({"model_type": "gemma3", "text_config": text})
    assert (config.rope_base_global, config.rope_base_local, config.rope_scale_global) == (1e6, 1e4, 8.0)
    assert config.generation == 3


def test_layer_types_list_is_folded_to_its_repeating_unit() -> None:
    layer_types = ["sliding_attention", "full_attention"] * 3
    config = config_from_hf(
        {
            **HF_GEMMA3,
            "model_type": "gemma2",
            "num_hidden_layers": 6,
            "layer_types": layer_types,
            "query_pre_attn_scalar": 256,
        }
    )
    assert config.attention_pattern == (AttentionType.LOCAL, AttentionType.GLOBAL)
    assert config.query_scale == 256**-0.5  # a divisor: Gemma 2 9B's is 256, not 224


def test_unknown_model_type_is_refused() -> None:
    with pytest.raises(CheckpointError, match="model_type 'llama' is not a Gemma text model"):
        config_from_hf({**HF_GEMMA3, "model_type": "llama"})


def _official_tree(config_mha: bool, transposed: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A random official-layout tree for a tiny Gemma 1 config, and the tensors ours should get."""
    config = tiny_config(1, num_kv_heads=4 if config_mha else 1)
    model = Transformer(config, rngs=nnx.Rngs(3))
    ours = flat_params(model)
    tree: dict[str, Any] = {
        "embedder": {"input_embedding": ours["embedder.input_embedding"]},
        "final_norm": {"scale": ours["final_norm.scale"]},
    }
    for i in range(config.num_layers):
        p = lambda name: ours[f"layers.{i}.{name}"]  # noqa: E731, B023
        attn = {"attn_vec_einsum": {"w": p("attn.o")}}
        if config_mha:
            attn["qkv_einsum"] = {"w": np.stack([p("attn.q"), p("attn.k"), p("attn.v")])}
        else:
            attn["q_einsum"] = {"w": p("attn.q")}
            attn["kv_einsum"] = {"w": np.stack([p("attn.k"), p("attn.v")])}
        gating = np.stack([p("mlp.gate"), p("mlp.up")])
        tree[f"layer_{i}"] = {
            "pre_attention_norm": {"scale": p("pre_attention_norm.scale")},
            "pre_ffw_norm": {"scale": p("pre_ffw_norm.scale")},
            "attn": attn,
            "mlp": {
                "gating_einsum": gating.transpose(0, 2, 1) if transposed else gating,
                "linear": p("mlp.down"),
            },
        }
    return {"transformer": tree}, ours


@pytest.mark.parametrize(("mha", "transposed"), [(False, False), (True, False), (False, True)])
def test_official_tree_layouts_map_to_ours(mha: bool, transposed: bool) -> None:
    tree, expected = _official_tree(mha, transposed)
    config = official.with_vocab_of(tree, tiny_config(1, num_kv_heads=4 if mha else 1))
    model = load(config, official.tensors(tree, config), source="test")
    got = flat_params(model)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_our_format_round_trips(tmp_path: Path) -> None:
    model = Transformer(tiny_config(2), rngs=nnx.Rngs(0))
    store.save(model, tmp_path / "ck")
    assert detect(tmp_path / "ck") == Format.OURS
    restored = load_model(tmp_path / "ck")
    assert restored.config == model.config
    tokens = jnp.arange(1, 30)[None]
    np.testing.assert_array_equal(np.asarray(restored(tokens)[0]), np.asarray(model(tokens)[0]))


def _hf_dir(tmp_path: Path, tensors: dict[str, np.ndarray]) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_shape_mismatch_names_the_tensor_and_file(tmp_path: Path) -> None:
    directory = _hf_dir(
        tmp_path,
        {
            "model.embed_tokens.weight": np.zeros((32, 8), np.float32),
            "model.norm.weight": np.zeros((9,), np.float32),
        },
    )
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors:model.norm.weight' has shape \[9\] but final_norm.scale needs \[8\]",
    ):
        load_model(directory)


def test_missing_tensors_are_listed(tmp_path: Path) -> None:
    directory = _hf_dir(tmp_path, {"model.embed_tokens.weight": np.zeros((32, 8), np.float32)})
    with pytest.raises(CheckpointError, match=r"tensors missing, e.g. final_norm.scale"):
        load_model(directory)


def test_unknown_directory_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot tell the checkpoint format"):
        detect(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing")
    (tmp_path / "_METADATA").write_text("{}")
    with pytest.raises(CheckpointError, match="pass the variant"):
        load_model(tmp_path)
