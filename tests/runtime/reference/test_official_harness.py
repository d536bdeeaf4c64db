"""The official-gemma reference harness works end to end: its cached venv builds (or is reused), the
worker runs the official `gemma` package on a tiny Gemma 2 config with a sequence longer than the sliding
window and returns finite logits of the right shape, identically for the same seed, and a Gemma 1
multi-head config has the official tree's fused ``qkv_einsum``. Skipped with the reason when the venv
cannot be built, unless ``GEMMA_REQUIRE_REFERENCES=1``, which turns the skip into a failure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.runtime.reference.official import ensure_official_venv, run_official
from tests.runtime.reference.venvs import ReferenceUnavailableError

TINY = {"num_embed": 256, "embed_dim": 64, "hidden_dim": 128, "num_heads": 4, "head_dim": 16}
GEMMA2 = {
    **TINY,
    "num_kv_heads": 2,
    "attention_types": ["local_sliding", "global"] * 2,
    "sliding_window_size": 8,
    "attn_logits_soft_cap": 50.0,
    "final_logit_softcap": 30.0,
    "use_post_attn_norm": True,
    "use_post_ffw_norm": True,
    "query_pre_attn_norm": "BY_ONE_OVER_SQRT_HEAD_DIM",
    "transpose_gating_einsum": True,
}
GEMMA1_MHA = {
    **TINY,
    "num_kv_heads": 4,
    "attention_types": ["global"] * 2,
    "final_logit_softcap": None,
    "use_post_attn_norm": False,
    "use_post_ffw_norm": False,
}
TOKENS = np.random.RandomState(0).randint(3, 256, size=(2, 20)).tolist()  # 20 > the window of 8


@pytest.fixture(scope="module")
def unavailable(pytestconfig: pytest.Config) -> str | None:
    """Builds (or reuses) the reference venv once; None when it is ready, else why it is not."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def log(line: str) -> None:  # a cold build takes minutes: show its progress live
        if capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    try:
        ensure_official_venv(log)
    except ReferenceUnavailableError as err:
        return str(err)
    return None


def _require_reference(unavailable: str | None) -> None:
    """Skip with a one-line reason, or fail (in the test, not its setup) under GEMMA_REQUIRE_REFERENCES=1."""
    if unavailable is None:
        return
    reason = f"official gemma reference unavailable: {unavailable.splitlines()[0]}"
    if os.environ.get("GEMMA_REQUIRE_REFERENCES") == "1":
        pytest.fail(f"GEMMA_REQUIRE_REFERENCES=1 but {reason}\n{unavailable}")
    pytest.skip(reason)


def _request(config: dict[str, Any]) -> dict[str, Any]:
    return {"config": config, "seed": 0, "tokens": TOKENS, "perturb_norms": True, "dtype": "float32"}


@pytest.mark.timeout(3600)  # the first run builds the venv
def test_gemma2_logits_are_finite_and_deterministic(unavailable: str | None, tmp_path: Path) -> None:
    _require_reference(unavailable)
    first = run_official(_request(GEMMA2), tmp_path / "first")
    second = run_official(_request(GEMMA2), tmp_path / "second")
    assert first["logits"].shape == (2, 20, 256)
    assert first["logits"].dtype == np.float32
    assert np.isfinite(first["logits"]).all()
    assert np.abs(first["logits"]).max() <= 30.0  # the final soft-cap
    np.testing.assert_array_equal(first["logits"], second["logits"])
    paths = set(first["__tree_paths__"].tolist())
    assert {"embedder/input_embedding", "final_norm/scale", "layer_3/post_ffw_norm/scale"} <= paths
    assert first["layer_0/mlp/gating_einsum"].shape == (2, 128, 64)  # transposed: [2, F, D]
    assert np.abs(first["layer_0/pre_attention_norm/scale"]).max() > 0  # norms were perturbed


@pytest.mark.timeout(3600)
def test_gemma1_multi_head_uses_the_fused_qkv_einsum(unavailable: str | None, tmp_path: Path) -> None:
    _require_reference(unavailable)
    out = run_official(_request(GEMMA1_MHA), tmp_path)
    paths = set(out["__tree_paths__"].tolist())
    assert "layer_0/attn/qkv_einsum/w" in paths
    assert not any("q_einsum" in path.split("/") or "kv_einsum" in path.split("/") for path in paths)
    assert out["layer_1/attn/qkv_einsum/w"].shape == (3, 4, 64, 16)  # [3, N, D, H]
    assert not any("post_" in path for path in paths)
    assert out["logits"].shape == (2, 20, 256)
