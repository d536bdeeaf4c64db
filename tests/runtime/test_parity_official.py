"""Parity with the official `gemma` JAX package (its own venv: its pins clash with ours) on tiny random
configs of each generation: the official model initialises, perturbs its norm scales and saves an Orbax
checkpoint in the published flat layout; our importer reads that checkpoint (fused qkv_einsum for
multi-head, transposed gating for Gemma 2/3), and our logits match the official ones within 1e-4
relative, for the full forward and for prefill-then-decode through our cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from gemma_runtime.checkpoint import official
from gemma_runtime.checkpoint.params import load
from gemma_runtime.model import Transformer, tiny_config
from gemma_runtime.variants import TransformerConfig
from tests.runtime.reference.official import run_official
from tests.runtime.reference.venvs import ReferenceUnavailableError

COMMON: dict[str, Any] = {
    "num_embed": 256,
    "embed_dim": 64,
    "hidden_dim": 128,
    "num_heads": 4,
    "head_dim": 16,
}
GEMMA1 = {
    "attention_types": ["global"] * 4,
    "final_logit_softcap": None,
    "use_post_attn_norm": False,
    "use_post_ffw_norm": False,
}
GEMMA23 = {
    "use_post_attn_norm": True,
    "use_post_ffw_norm": True,
    "transpose_gating_einsum": True,
    "sliding_window_size": 8,
}
CASES: dict[str, tuple[dict[str, Any], TransformerConfig]] = {
    "gemma1-mqa": ({**COMMON, **GEMMA1, "num_kv_heads": 1}, tiny_config(1, num_kv_heads=1)),
    "gemma1-mha": ({**COMMON, **GEMMA1, "num_kv_heads": 4}, tiny_config(1, num_kv_heads=4)),
    "gemma2": (
        {**COMMON, **GEMMA23, "num_kv_heads": 2, "attention_types": ["local_sliding", "global"] * 2,
         "attn_logits_soft_cap": 50.0, "final_logit_softcap": 30.0},
        tiny_config(2, query_pre_attn_scalar=16),
    ),
    "gemma3": (
        {**COMMON, **GEMMA23, "num_kv_heads": 2, "attention_types": ["local_sliding"] * 5 + ["global"],
         "final_logit_softcap": None, "use_qk_norm": True, "local_base_frequency": 10_000,
         "global_base_frequency": 1_000_000, "global_scale_factor": 8.0},
        tiny_config(3, num_layers=6, query_pre_attn_scalar=16),
    ),
}  # fmt: skip
TOKENS = np.random.RandomState(1).randint(3, 256, size=(2, 20)).tolist()


@pytest.fixture(scope="module", params=list(CASES))
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TransformerConfig, Path, np.ndarray]:
    name = request.param
    official_config, ours = CASES[name]
    workdir = tmp_path_factory.mktemp(f"official-{name}")
    try:
        out = run_official(
            {
                "config": {**official_config, "query_pre_attn_norm": "BY_ONE_OVER_SQRT_HEAD_DIM"},
                "seed": 0,
                "tokens": TOKENS,
                "perturb_norms": True,
                "weight_std": 0.08,
                "dtype": "float32",
                "orbax_dir": "checkpoint",
            },
            workdir,
        )
    except ReferenceUnavailableError as err:
        if os.environ.get("GEMMA_REQUIRE_REFERENCES") == "1":
            pytest.fail(f"GEMMA_REQUIRE_REFERENCES=1 but the official reference is unavailable: {err}")
        pytest.skip(f"official gemma reference unavailable: {err}")
    return ours, workdir / "checkpoint", out["logits"]


def _model(config: TransformerConfig, checkpoint: Path) -> Transformer:
    tree = official.read_orbax(checkpoint)
    config = official.with_vocab_of(tree, config)
    return load(config, official.tensors(tree, config, str(checkpoint)), source=str(checkpoint))


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def test_full_forward_matches_the_official_model(
    reference: tuple[TransformerConfig, Path, np.ndarray],
) -> None:
    config, checkpoint, logits = reference
    ours, _ = _model(config, checkpoint)(jnp.asarray(TOKENS))
    assert _relative(np.asarray(ours), logits) < 1e-4


def test_prefill_then_decode_matches_the_official_model(
    reference: tuple[TransformerConfig, Path, np.ndarray],
) -> None:
    config, checkpoint, logits = reference
    model = _model(config, checkpoint)
    tokens = jnp.asarray(TOKENS)
    cache = model.init_cache(2, 24)
    out, cache = model(tokens[:, :9], jnp.broadcast_to(jnp.arange(9), (2, 9)), cache=cache)
    steps = [out]
    for t in range(9, 20):
        out, cache = model(tokens[:, t : t + 1], jnp.full((2, 1), t), cache=cache)
        steps.append(out)
    assert _relative(np.asarray(jnp.concatenate(steps, axis=1)), logits) < 1e-4
