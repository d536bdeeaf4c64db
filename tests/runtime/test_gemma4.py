"""Gemma 4 in the one model definition: the tiny preset of each kind (dense with keys doubling as values,
E-style with per-layer inputs and KV sharing, mixture of experts) builds with the parameters its config
counts, decodes through the cache as the full forward computes, and recomputes the same under remat;
the pieces that differ from Gemma 1-3 (proportional RoPE, the norm's scale form, routing) do what
transformers does. Parity with transformers itself: test_parity_hf_gemma4.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gemma_runtime.model import AttentionType, Transformer, tiny_config
from gemma_runtime.model.block import apply_rope, rms_norm, route
from gemma_runtime.variants import GEMMA4_PRESETS

KINDS = ("dense", "e", "moe")
TOKENS = np.random.RandomState(0).randint(3, 256, size=(2, 20))


def _count(model: nnx.Module) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_presets_count_their_parameters(kind: str) -> None:
    config = GEMMA4_PRESETS[f"tiny-gemma4-{kind}"]
    assert config == tiny_config(4, kind)
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    assert _count(abstract) == config.param_count()


def test_layer_shapes_follow_the_config() -> None:
    dense, e, moe = (Transformer(tiny_config(4, kind), rngs=nnx.Rngs(0)) for kind in KINDS)
    local, global_ = dense.layers[0].attn, dense.layers[2].attn
    assert local.attn_type == AttentionType.LOCAL
    assert global_.attn_type == AttentionType.GLOBAL
    assert local.k.shape == (2, 64, 16)
    assert local.v.shape == (2, 64, 16)
    assert global_.k.shape == (1, 64, 32)
    assert global_.q.shape == (4, 64, 32)
    assert getattr(global_, "v", None) is None  # keys double as values
    # E-style: the last two layers reuse layer 3's (local) and layer 2's (global) keys and values.
    assert e.config.kv_sources == (None, None, None, None, 3, 2)
    for layer in e.layers[4:]:
        assert getattr(layer.attn, "k", None) is None
        assert getattr(layer.attn, "key_norm", None) is None
        assert layer.mlp.gate.shape == (64, 256)  # double-wide
    assert e.per_layer_embedding.shape == (1024, 6 * 8)  # the vocabulary x layers x P
    assert moe.layers[0].moe.gate.shape == (4, 64, 32)
    assert float(dense.final_norm.scale[0]) == 1.0  # scales multiply as they are: they start at one


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_then_decode_and_remat_match_the_full_forward(kind: str) -> None:
    model = Transformer(tiny_config(4, kind), rngs=nnx.Rngs(1))
    tokens = jnp.asarray(TOKENS)
    full, _ = model(tokens)
    cache = model.init_cache(2, 32)
    logits, cache = model(tokens[:, :9], jnp.broadcast_to(jnp.arange(9), (2, 9)), cache=cache)
    steps = [logits]
    for t in range(9, 20):
        logits, cache = model(tokens[:, t : t + 1], jnp.full((2, 1), t), cache=cache)
        steps.append(logits)
    scale = float(jnp.max(jnp.abs(full)))
    assert float(jnp.max(jnp.abs(jnp.concatenate(steps, axis=1) - full))) < 1e-4 * scale
    model.remat = "full"
    rematted, _ = model(tokens)
    np.testing.assert_allclose(np.asarray(rematted), np.asarray(full), rtol=1e-5, atol=1e-5 * scale)


def test_proportional_rope_rotates_only_its_fraction() -> None:
    x = jax.random.normal(jax.random.key(0), (1, 3, 2, 32))
    positions = jnp.arange(3)[None]
    out = apply_rope(x, positions, base=1e6, fraction=0.25)
    full = apply_rope(x, positions, base=1e6)
    # 4 of the 16 pairs rotate, as at full width; the other 12 pass as they are.
    for half in (0, 16):
        np.testing.assert_allclose(out[..., half : half + 4], full[..., half : half + 4], rtol=1e-6)
        np.testing.assert_array_equal(out[..., half + 4 : half + 16], x[..., half + 4 : half + 16])


def test_norm_scale_forms() -> None:
    x = jnp.asarray([[3.0, 4.0]])
    scale = jnp.asarray([2.0, 0.5])
    unit = x / jnp.sqrt(12.5 + 1e-6)
    np.testing.assert_allclose(rms_norm(x, scale, 1e-6, plus_one=False), unit * scale, rtol=1e-6)
    np.testing.assert_allclose(rms_norm(x, scale, 1e-6), unit * (1 + scale), rtol=1e-6)


def test_router_renormalises_the_top_k_and_applies_each_experts_scale() -> None:
    config = tiny_config(4, "moe")
    d, e = config.embed_dim, config.num_experts
    params = {
        "router": jax.random.normal(jax.random.key(0), (d, e)),
        "router_scale": jnp.ones((d,)),
        "per_expert_scale": jnp.asarray([1.0, 2.0, 3.0, 4.0]),
    }
    x = jax.random.normal(jax.random.key(1), (5, d))
    chosen, weights = route(config, params, x)
    assert chosen.shape == weights.shape == (5, 2)
    np.testing.assert_allclose(jnp.sum(weights / params["per_expert_scale"][chosen], axis=-1), 1.0, rtol=1e-6)


# Published sizes, from Google's Gemma 4 model card as quoted by andysmith.ai's summary of it ("E2B: 2.3B
# effective params, E4B: 4.5B, 31B: 30.7B", the 31B's ~550M vision encoder listed apart, e.g. by
# reeboot.fr/en/blog/gemma-4-31b) and by vast.ai/model/gemma-4-26b-a4b-it ("25.2B total parameters but
# only 3.8B active per token"). The E models' totals ("5.1B with embeddings", "8B") include audio and
# vision towers of unstated exact size, and their "effective" counts have no definition that
# reproduces both (E2B without its per-layer table: 2.280 B; E4B: 4.644 B): they are not checked here.
# The 12B's card gives 11.95 B for the model without vision or audio towers but with their small
# embedders (about 35 M, which a text model does not load).
PUBLISHED = {"gemma4-12b": 11.95e9, "gemma4-31b": 30.7e9, "gemma4-26b-a4b": 25.2e9}
PUBLISHED_ACTIVE = {"gemma4-26b-a4b": 3.8e9}  # two significant figures: within half a unit of the last


@pytest.mark.parametrize("name", [n for n in GEMMA4_PRESETS if not n.startswith("tiny")])
def test_released_presets_count_their_parameters(name: str) -> None:
    config = GEMMA4_PRESETS[name]
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    count = _count(abstract)
    assert count == config.param_count()
    if name in PUBLISHED:
        assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.005, f"{name}: {count / 1e9:.4f} B"
    if name in PUBLISHED_ACTIVE:
        assert abs(config.active_param_count() - PUBLISHED_ACTIVE[name]) <= 0.05e9


def test_both_ways_of_running_the_experts_agree() -> None:
    """Grouped products (training, the model) and every expert over every token (the serving step,
    which vmap maps over shards) compute the same mixture."""
    from gemma_runtime.model.block import experts
    from gemma_runtime.model.matmul import Products

    config = tiny_config(4, "moe")
    model = Transformer(config, rngs=nnx.Rngs(2))
    params = model.layers[0].weights()
    x = jax.random.normal(jax.random.key(3), (7, config.embed_dim))
    chosen, weights = route(config, params, x)
    grouped = experts(params, x, chosen, weights)
    every = experts(params, x, chosen, weights, products=Products(grouped_experts=False))
    np.testing.assert_allclose(np.asarray(every), np.asarray(grouped), rtol=1e-5, atol=1e-6)


def test_both_ways_of_running_the_experts_have_the_same_gradients() -> None:
    """Training differentiates through the grouped products (``ragged_dot``)."""
    from gemma_runtime.model.block import experts
    from gemma_runtime.model.matmul import Products

    config = tiny_config(4, "moe")
    params = Transformer(config, rngs=nnx.Rngs(2)).layers[0].weights()
    x = jax.random.normal(jax.random.key(3), (7, config.embed_dim))
    chosen, weights = route(config, params, x)
    names = ("experts_gate", "experts_up", "experts_down")

    def loss(trained: dict[str, jax.Array], products: Products) -> jax.Array:
        out = experts({**params, **trained}, x, chosen, weights, products=products)
        return jnp.sum(jnp.sin(out))

    trained = {name: params[name] for name in names}
    grouped = jax.grad(loss)(trained, Products())
    every = jax.grad(loss)(trained, Products(grouped_experts=False))
    for name in names:
        np.testing.assert_allclose(np.asarray(grouped[name]), np.asarray(every[name]), rtol=1e-4, atol=1e-6)
