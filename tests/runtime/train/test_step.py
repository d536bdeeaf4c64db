"""The jitted step: gradient accumulation equals one big batch, the schedule, LoRA starting exactly at
the base model and training only its adapters, remat not changing the numbers, and the memory model
counting exactly the state a checkpoint saves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gemma_runtime import axes
from gemma_runtime.config import Hyperparameters, load_train_config
from gemma_runtime.memory import LORA_TARGETS, training_state_bytes
from gemma_runtime.model import Transformer, tiny_config
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import batch_sharding
from gemma_runtime.train import data, loop, lora, step
from gemma_runtime.train.checkpoints import flatten
from tests.runtime.train import runner


def _batch(rows: int = 4, length: int = 16) -> step.Batch:
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, 256, size=int(n)).tolist() for n in rng.integers(3, 20, size=12)]
    batch = data.Dataset(data.pack(docs, length), rows, seed=0).batch(0)
    return tuple(jnp.asarray(x) for x in batch.as_tuple())  # type: ignore[return-value]


def _run(
    h: Hyperparameters, steps: int, *, generation: int = 2, remat: str = "none", sgd: bool = False
) -> tuple[list[float], Any]:
    model = Transformer(tiny_config(generation), rngs=nnx.Rngs(0))
    model.remat = remat
    graphdef, params = nnx.split(model, nnx.Param)
    settings, trainable = None, params
    frozen: Any = {}
    if h.lora is not None:
        settings = lora.settings(params, h.lora.rank, h.lora.alpha)
        trainable, frozen = lora.init(params, settings, jax.random.key(1)), params
    tx = optax.sgd(0.1) if sgd else step.optimizer(h)  # plain SGD shows the gradients themselves
    trainer = step.Trainer(graphdef, tx, step.schedule(h), h.gradient_accumulation_steps, settings)
    mesh = make_mesh(1, 1, 1, jax.devices()[:1])
    state = step.init_state(trainer, trainable, mesh)
    fn = step.compile_step(trainer, state, frozen, batch_sharding(mesh), mesh)
    losses = []
    for _ in range(steps):
        state, out = fn(state, frozen, _batch())
        losses.append(float(out["loss"]))
    return losses, state


def _hyper(**changes: Any) -> Hyperparameters:
    return Hyperparameters.model_validate(
        {
            "steps": 5,
            "global_batch_size": 4,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "weight_decay": 0.1,
            **changes,
        }
    )


def test_gradient_accumulation_gives_the_same_updates_as_one_batch() -> None:
    whole, _ = _run(_hyper(), 3)
    accumulated, _ = _run(_hyper(gradient_accumulation_steps=4), 3)
    np.testing.assert_allclose(accumulated, whole, rtol=2e-5)
    # Adam's update of a near-zero gradient is sign-like and magnifies float noise, so compare the
    # parameters after plain SGD steps: they differ only by the gradients' summation order.
    _, state1 = _run(_hyper(), 3, sgd=True)
    _, state2 = _run(_hyper(gradient_accumulation_steps=4), 3, sgd=True)
    for a, b in zip(jax.tree.leaves(state1["trainable"]), jax.tree.leaves(state2["trainable"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_remat_recomputes_without_changing_the_numbers(remat: str) -> None:
    plain, _ = _run(_hyper(), 2)
    rematted, _ = _run(_hyper(), 2, remat=remat)
    np.testing.assert_allclose(rematted, plain, rtol=1e-5)


def test_warmup_then_cosine_decay() -> None:
    lr = step.schedule(_hyper(steps=100, warmup_steps=10, learning_rate=1.0))
    assert float(lr(0)) == pytest.approx(0.1)
    assert float(lr(9)) == pytest.approx(1.0)
    assert float(lr(55)) == pytest.approx(0.55, abs=0.01)  # half-way down the cosine to 10 %
    assert float(lr(100)) == pytest.approx(0.1, abs=1e-3)
    constant = step.schedule(_hyper(steps=100, schedule="constant", learning_rate=0.5, warmup_steps=0))
    assert [float(constant(s)) for s in (0, 50, 99)] == [0.5, 0.5, 0.5]


def test_lora_starts_at_the_base_model_and_trains_only_adapters() -> None:
    model = Transformer(tiny_config(3), rngs=nnx.Rngs(0))
    _, params = nnx.split(model, nnx.Param)
    settings = lora.settings(params, 4, 8.0)
    names = {name for name, _ in settings.embed_axes}
    assert "layers.0.attn.q" in names
    assert "layers.0.mlp.down" in names
    assert len(names) == 7 * 4
    adapters = lora.init(params, settings, jax.random.key(0))
    merged = lora.merged(params, adapters, settings)
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)  # B = 0: exactly the base model

    losses, state = _run(_hyper(lora={"rank": 4}, learning_rate=1e-2), 5, generation=3)
    assert losses[-1] < losses[0]
    trained = state["trainable"]
    assert set(trained) == names  # the optimizer only ever saw the adapters
    assert any(float(jnp.abs(ab["b"]).max()) > 0 for ab in trained.values())


def test_lora_on_gemma4_adapts_the_matrices_each_layer_has_and_trains() -> None:
    config = tiny_config(4, "e")  # layers 4 and 5 share keys and values: no k or v of their own
    _, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)), nnx.Param)
    names = {name for name, _ in lora.settings(params, 4, 8.0).embed_axes}
    expected = {
        f"layers.{i}.{'attn' if name in ('q', 'k', 'v', 'o') else 'mlp'}.{name}"
        for i in range(config.num_layers)
        for name, weight in axes.layer_weights(config, i).items()
        if name in LORA_TARGETS and weight is not None
    }
    assert names == expected
    assert "layers.5.attn.k" not in names
    losses, _ = _run(_hyper(lora={"rank": 4}, learning_rate=1e-2), 5, generation=4)  # dense: global v-less
    assert losses[-1] < losses[0]


def test_lora_delta_is_rank_limited_and_laid_out_like_the_weight() -> None:
    a = jax.random.normal(jax.random.key(0), (6, 2))
    b = jax.random.normal(jax.random.key(1), (2, 4 * 3))
    d = lora.delta((4, 6, 3), 1, a, b)  # like q: [N, D, H], embed axis 1
    assert d.shape == (4, 6, 3)
    assert int(np.linalg.matrix_rank(np.moveaxis(np.asarray(d), 1, 0).reshape(6, -1))) == 2


@pytest.mark.parametrize(
    ("precision", "lora_rank", "variant"),
    [
        *[(precision, rank, "tiny") for precision in ("bf16", "f32") for rank in (None, 4)],
        # Gemma 4: KV-shared layers without k and v, global layers without v, experts, per-layer inputs.
        *[("f32", rank, variant) for variant in ("tiny-gemma4-e", "tiny-gemma4-moe") for rank in (None, 4)],
    ],
)
def test_the_memory_model_counts_the_state_a_checkpoint_saves(
    tmp_path: Path, precision: str, lora_rank: int | None, variant: str
) -> None:
    """The operator's grace period is sized from this count: the trainer's real state (float32 master
    weights or adapters and AdamW's moments, whatever the compute precision) has exactly that many bytes."""
    training = {"precision": precision, **({"lora": {"rank": lora_rank}} if lora_rank else {})}
    path = runner.config(tmp_path, "state", training=training, model={"variant": variant})
    config = load_train_config(path)
    run = loop.Training(config)
    saved = flatten(run.state)
    assert sum(x.nbytes for x in saved.values()) == training_state_bytes(run.shape, lora_rank=lora_rank)
    assert {str(x.dtype) for x in saved.values()} == {"float32", "int32"}


def _whole_sequence_loss(model: Transformer, batch: step.Batch) -> tuple[jax.Array, jax.Array]:
    """The loss with the whole [B, L, V] logits at once: what the chunked loss must equal."""
    tokens, positions, segments, targets, weights = batch
    logits, _ = model(tokens, positions, segment_ids=segments)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights), jnp.sum(weights)


@pytest.mark.parametrize("length", [64, 40])  # 8 chunks of 8; 40 is not a multiple of 16: 5 chunks of 8
def test_the_loss_over_sequence_chunks_equals_the_whole_sequence_loss(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    monkeypatch.setattr(step, "LOSS_CHUNK", 16 if length == 40 else 8)
    graphdef, params = nnx.split(Transformer(tiny_config(2), rngs=nnx.Rngs(0)), nnx.Param)
    batch = _batch(rows=2, length=length)

    def loss(fn: Callable[[Transformer, step.Batch], tuple[jax.Array, jax.Array]], p: Any) -> jax.Array:
        total, count = fn(nnx.merge(graphdef, p), batch)
        return total / count

    chunked, chunked_grads = jax.value_and_grad(lambda p: loss(step.loss_sums, p))(params)
    whole, whole_grads = jax.value_and_grad(lambda p: loss(_whole_sequence_loss, p))(params)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(whole_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    jaxpr = str(jax.make_jaxpr(lambda p: loss(step.loss_sums, p))(params))
    assert f"length={length // 8}" in jaxpr  # the chunks run in a scan of that many steps
