"""Every parameter carries logical axes, and the same model sharded over 8 simulated CPU devices
(data x fsdp x tensor meshes) computes the same logits as unsharded; a mixture of experts split over an
``expert`` axis computes the same values and gradients."""

from __future__ import annotations

import json
import textwrap

import pytest
from flax import nnx

from gemma_runtime.axes import LOGICAL_AXIS_RULES
from gemma_runtime.checkpoint.params import variables
from gemma_runtime.model import Transformer, tiny_config
from gemma_runtime.parallel.mesh import resolve_shape
from gemma_runtime.variants import TransformerConfig
from tests.runtime.simulated import run_json


@pytest.mark.parametrize(
    "config", [tiny_config(3), tiny_config(4, "moe"), tiny_config(4, "e")], ids=["gemma3", "moe", "e"]
)
def test_every_parameter_has_logical_axes_from_the_table(config: TransformerConfig) -> None:
    model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    for name, var in variables(model).items():
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None, name
        assert len(axes) == len(var.shape), name
        assert all(a is None or a in LOGICAL_AXIS_RULES for a in axes), name


@pytest.mark.parametrize(
    ("given", "devices", "expected"),
    [((1, -1, 1), 8, (1, 8, 1)), ((2, -1, 2), 8, (2, 2, 2)), ((-1, 1, 4), 8, (2, 1, 4))],
)
def test_mesh_shape_fills_one_axis(
    given: tuple[int, int, int], devices: int, expected: tuple[int, int, int]
) -> None:
    assert resolve_shape(*given, devices) == expected


def test_the_expert_axis_counts_in_the_mesh_shape() -> None:
    assert resolve_shape(2, -1, 2, 8, expert=2) == (2, 1, 2)
    with pytest.raises(ValueError, match="3 does not divide the 8 devices"):
        resolve_shape(1, -1, 1, 8, expert=3)
    with pytest.raises(ValueError, match="data\\*fsdp\\*expert\\*tensor = 16 but 8"):
        resolve_shape(2, 2, 2, 8, expert=2)


@pytest.mark.parametrize(
    ("given", "message"),
    [((2, 4, 2), "16 but 8 devices"), ((3, -1, 1), "3 does not divide"), ((-1, -1, 1), "at most one")],
)
def test_mesh_shape_errors(given: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_shape(*given, 8)


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from gemma_runtime.model import Transformer, tiny_config
    from gemma_runtime.parallel.mesh import make_mesh
    from gemma_runtime.parallel.sharding import batch_sharding, param_shardings

    assert jax.device_count() == 8
    config = tiny_config(3, num_heads=4, num_kv_heads=2)
    model = Transformer(config, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.RandomState(0).randint(1, 256, size=(8, 24)))
    reference = np.asarray(model(tokens)[0])
    results = {}
    for shape in json.loads(sys.argv[1]):
        mesh = make_mesh(*shape)
        graph, state = nnx.split(model)
        state = jax.device_put(state, param_shardings(state, mesh))
        sharded = nnx.merge(graph, state)
        x = jax.device_put(tokens, batch_sharding(mesh))
        logits = nnx.jit(lambda m, t: m(t)[0])(sharded, x)
        q = state["layers"][0]["attn"]["q"][...]
        results[str(shape)] = {
            "max_abs_diff": float(np.max(np.abs(np.asarray(logits) - reference))),
            "q_devices": len(q.sharding.device_set),
            "q_spec": str(q.sharding.spec),
        }
    print(json.dumps(results))
    """
)


def test_sharded_forward_equals_unsharded_on_8_cpu_devices() -> None:
    meshes = [[8, 1, 1], [2, 4, 1], [1, 4, 2], [2, 2, 2]]
    results = run_json(["-c", _SCRIPT, json.dumps(meshes)])
    for shape, result in results.items():
        assert result["max_abs_diff"] < 1e-4, (shape, result)
    assert results["[8, 1, 1]"]["q_devices"] == 8  # replicated across data parallelism
    assert results["[1, 4, 2]"]["q_spec"] == "P('tensor', 'fsdp')"  # heads over tensor, embed over fsdp


def test_multislice_meshes_span_slices_only_along_data() -> None:
    from gemma_runtime.parallel.mesh import split_over_slices

    assert split_over_slices((4, 8, 1, 1), 2) == ((2, 8, 1, 1), (2, 1, 1, 1))
    with pytest.raises(ValueError, match="data axis 1 is not a multiple of the 2 slices"):
        split_over_slices((1, 16, 1, 1), 2)


def test_experts_split_over_the_expert_axis_give_one_devices_values_and_gradients() -> None:
    results = run_json(["-m", "tests.runtime.expert_case"])
    assert sorted(results) == ["every", "grouped"]  # training's grouped products, serving's loop
    for how, found in results.items():
        # The loss, then the gradients of the three expert weights, the tokens and the router's shares.
        assert len(found["relative_differences"]) == 6, how
        assert max(found["relative_differences"]) < 1e-5, (how, found)
        # Each device holds 2 of the 4 experts and half of each expert's hidden axis, and the experts are
        # never gathered: the partial sums are all-reduced (a gather would show as all-gather).
        assert found["experts_shard"] == [2, 64, 16], how
        assert found["collectives"] == ["all-reduce"], (how, found)
