"""What ``gemma-runtime plan`` compiles is what the runtime runs: on the CPU, the plan's abstract serving
weights, KV cache and per-step inputs have the shapes, dtypes and shardings of the arrays a real engine
passes to its jitted step in warm-up (every bucket, decode only, several segments, int8 too), and the
plan's abstract training state those of the state the trainer builds."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import Transformer, preset, tiny_config
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.plan import serving
from gemma_runtime.serve.engine import ModelEngine
from gemma_runtime.train import setup, step


def _described(tree: Any) -> list[tuple[tuple[int, ...], str, Any]]:
    return [(tuple(a.shape), str(a.dtype), a.sharding) for a in jax.tree.leaves(tree)]


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_the_planned_serving_step_takes_the_engines_arguments(quantization: str) -> None:
    config = tiny_config(2)
    model = Transformer(config, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    limits = {"slots": 4, "max_len": 64, "max_prefill": 32, "max_segments": 2}
    engine = ModelEngine.from_model(model, quantization=quantization, **limits)
    calls: list[tuple[Any, ...]] = []
    real_step = engine._step

    def recording(*args: Any) -> Any:
        calls.append(args)
        return real_step(*args)

    engine._step = recording
    engine.warm_up()

    planned = serving.ServingStep(config, "bfloat16", quantization, 1, 1, **limits)
    mesh = engine.mesh
    assert _described(serving.abstract_weights(planned, mesh)) == _described(engine.weights)
    assert _described(serving.abstract_cache(planned, mesh)) == _described(engine.cache)
    lowered = dict(serving.lower(planned, list(mesh.devices.flat)))
    assert list(lowered) == ["decode", "chunk 16", "chunk 32"]  # what warm-up compiles, in its order
    assert len(calls) == len(lowered)
    for (name, program), args in zip(lowered.items(), calls, strict=True):
        # The lowered program's inputs are the engine's arguments, leaf for leaf.
        expected = [(tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args)]
        got = [(tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(program.in_avals)]
        assert got == expected, name


def test_the_planned_training_state_is_the_trainers() -> None:
    config = TrainConfig.model_validate(
        {
            "name": "plan",
            "model": {"variant": "tiny"},
            "data": {"path": "unused"},
            "training": {"steps": 1, "remat": "full"},
        }
    )
    mesh = make_mesh(1, -1, 1)
    graphdef, abstract = setup.abstract_params(config, preset("tiny"), mesh)
    _, params, _ = setup.build_model(config, mesh)
    assert _described(abstract) == _described(params)
    trainer = step.Trainer(graphdef, step.optimizer(config.training), step.schedule(config.training), 1, None)
    assert _described(step.abstract_state(trainer, abstract, mesh)) == _described(
        step.init_state(trainer, params, mesh)
    )
