"""The 8-device half of test_sharding.py's expert-parallel test, run in a subprocess with 8 simulated CPU
devices (``python -m tests.runtime.expert_case``; prints one JSON document): the tiny Gemma 4 mixture
of experts' expert layer (values and gradients with respect to the experts, the tokens and the router's
weights) on a data 2 x expert 2 x tensor 2 mesh against one device, for grouped products (training) and
the loop over experts (serving), and which collectives the sharded program runs."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gemma_runtime.model import tiny_config
from gemma_runtime.model.block import experts
from gemma_runtime.model.matmul import Products
from gemma_runtime.parallel.mesh import make_mesh
from gemma_runtime.parallel.sharding import fitted_spec


def main() -> None:
    config = tiny_config(4, "moe")
    e, d, m, tokens = config.num_experts, config.embed_dim, config.expert_hidden_dim, 16
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    weights = {
        "experts_gate": jax.random.normal(keys[0], (e, d, m)) * 0.1,
        "experts_up": jax.random.normal(keys[1], (e, d, m)) * 0.1,
        "experts_down": jax.random.normal(keys[2], (e, m, d)) * 0.1,
    }
    x = jax.random.normal(keys[3], (tokens, d))
    chosen = jax.random.randint(keys[4], (tokens, config.experts_per_token), 0, e)
    share = jax.random.uniform(keys[5], (tokens, config.experts_per_token))
    mesh = make_mesh(2, 1, 2, expert=2)
    rows = NamedSharding(mesh, PartitionSpec("data"))
    placed = {
        name: jax.device_put(w, NamedSharding(mesh, fitted_spec(axes, w.shape, mesh)))
        for (name, w), axes in zip(
            weights.items(),
            [("experts", "embed", "mlp"), ("experts", "embed", "mlp"), ("experts", "mlp", "embed")],
            strict=True,
        )
    }
    out = {}
    for grouped in (True, False):

        def loss(
            p: dict[str, jax.Array], x: jax.Array, share: jax.Array, grouped: bool = grouped
        ) -> jax.Array:
            y = experts(p, x, chosen, share, products=Products(grouped_experts=grouped))
            return jnp.sum(y * y)

        value_and_grad = jax.value_and_grad(loss, argnums=(0, 1, 2))
        reference = value_and_grad(weights, x, share)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            step = jax.jit(value_and_grad)
            sharded = step(placed, jax.device_put(x, rows), jax.device_put(share, rows))
            hlo = step.lower(placed, jax.device_put(x, rows), jax.device_put(share, rows)).compile().as_text()
        diffs = jax.tree.map(
            lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(a)))),
            reference,
            sharded,
        )
        out["grouped" if grouped else "every"] = {
            "relative_differences": jax.tree.leaves(diffs),
            "collectives": sorted(
                set(re.findall(r"\b(all-reduce|all-gather|all-to-all|reduce-scatter)\(", hlo))
            ),
            "experts_shard": list(placed["experts_gate"].addressable_shards[0].data.shape),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
