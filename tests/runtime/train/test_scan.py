"""The layers as a scan over their stacked weights (``training.scan_layers``) compute what the unrolled
layers do: the same loss and gradients for each generation's attention pattern (Gemma 1: every layer
global; Gemma 2: local and global in turn; Gemma 3: five local, one global, with layers left over after
the last whole period; Gemma 4's dense and mixture-of-experts models), under each remat policy and with
LoRA; the parameters keep one entry per layer, and a model built from the config scans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gemma_runtime.config import load_train_config
from gemma_runtime.model import Transformer, preset, tiny_config
from gemma_runtime.model.transformer import scan_groups
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.train import data, lora, setup, step
from gemma_runtime.variants import GEMMA4_PRESETS, TransformerConfig
from tests.runtime.train import runner


def _batch(rows: int = 4, length: int = 16) -> step.Batch:
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, 256, size=int(n)).tolist() for n in rng.integers(3, 20, size=12)]
    batch = data.Dataset(data.pack(docs, length), rows, seed=0).batch(0)
    return tuple(jnp.asarray(x) for x in batch.as_tuple())  # type: ignore[return-value]


def _loss_and_grads(config: TransformerConfig, scan: bool, remat: str, rank: int | None = None) -> Any:
    model = Transformer(config, rngs=nnx.Rngs(0))
    model.remat, model.scan_layers = remat, scan
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _batch()
    if rank is None:
        return jax.jit(jax.value_and_grad(lambda p: step.loss_sums(nnx.merge(graphdef, p), batch)[0]))(params)
    settings = lora.settings(params, rank, 8.0)
    adapters = lora.init(params, settings, jax.random.key(1))
    # Non-zero B, so that the adapters change the layers and their gradients are not trivial.
    adapters = jax.tree.map(lambda a: a + 0.01, adapters)

    def loss(adapters: Any) -> jax.Array:
        model = nnx.merge(graphdef, lora.merged(params, adapters, settings))
        return step.loss_sums(model, batch)[0]

    return jax.jit(jax.value_and_grad(loss))(adapters)


@pytest.mark.parametrize(
    ("generation", "layers", "groups"),
    [(1, 3, 3), (2, 4, 2), (3, 14, 2)],  # Gemma 3: two periods of six, two layers unrolled after them
)
@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_layers_give_the_unrolled_loss_and_gradients(
    generation: int, layers: int, groups: int, remat: str
) -> None:
    config = tiny_config(generation, num_layers=layers)
    assert scan_groups(config) == groups
    loss, grads = _loss_and_grads(config, scan=True, remat=remat)
    want_loss, want_grads = _loss_and_grads(config, scan=False, remat=remat)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert jax.tree.structure(grads) == jax.tree.structure(want_grads)  # one entry per layer, as before
    for (path, got), want in zip(jax.tree.leaves_with_path(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # Every layer has its own gradient (a scan that ran one layer's weights everywhere would not).
    q = [np.asarray(grads["layers"][i]["attn"]["q"][...]) for i in range(layers)]
    assert not np.allclose(q[0], q[-1])


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_gemma4_layers_scan_too_unless_they_share_keys_or_take_per_layer_inputs(kind: str) -> None:
    """Gemma 4's global layers differ from its local ones (head dim, keys as values): each position of
    the period has its own stack. Its E models stay unrolled."""
    config = tiny_config(4, kind)
    assert scan_groups(config) == 2
    assert scan_groups(tiny_config(4, "e")) == 0
    loss, grads = _loss_and_grads(config, scan=True, remat="full")
    want_loss, want_grads = _loss_and_grads(config, scan=False, remat="full")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_scanned_layers_with_lora_give_the_unrolled_adapter_gradients() -> None:
    config = tiny_config(2, num_layers=4)
    loss, grads = _loss_and_grads(config, scan=True, remat="minimal", rank=2)
    want_loss, want_grads = _loss_and_grads(config, scan=False, remat="minimal", rank=2)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    # The adapters' gradients sum products over every layer's rows: float rounding, in another order.
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_how_the_presets_group_their_layers() -> None:
    assert scan_groups(preset("gemma-7b")) == 28  # one global layer a step
    assert scan_groups(preset("gemma2-9b")) == 21  # local, global
    assert scan_groups(preset("gemma3-4b")) == 5  # five local and a global; 4 layers unrolled after
    assert scan_groups(preset("tiny")) == 0  # one period: nothing to scan
    # Gemma 4's E models (KV-shared layers, per-layer inputs) stay unrolled.
    assert scan_groups(GEMMA4_PRESETS["gemma4-e2b"]) == 0


def test_a_model_built_from_the_config_scans_unless_told_not_to(tmp_path: Path) -> None:
    mesh = make_mesh(1, 1, 1, jax.devices()[:1])
    for changes, scan, kernel in (
        ({}, True, "auto"),
        ({"scan_layers": False, "attention": "xla"}, False, "xla"),
    ):
        config = load_train_config(runner.config(tmp_path, "scan", training=changes))
        graphdef, params, _ = setup.build_model(config, mesh)
        model = nnx.merge(graphdef, params)
        assert (model.scan_layers, model.attention, model.remat) == (scan, kernel, "none")
