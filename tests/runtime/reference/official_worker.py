"""Runs the official `gemma` JAX package inside its own venv; never imports anything from this repo.

Usage: ``python official_worker.py request.json out.npz``. The request:

- ``config``: keyword arguments of the official ``TransformerConfig``, passed through, except
  ``attention_types`` (strings: ``"global"``, ``"local_sliding"``) and ``query_pre_attn_norm`` (the
  ``QueryPreAttentionNormalisation`` member name), which become the official enums;
- ``seed`` (int), ``tokens`` (int32 [B, T], 0 is padding), ``dtype`` (``"float32"``, ``"bfloat16"``);
- ``perturb_norms``: add N(0, 0.1) to every norm scale (they initialise to zero);
- ``weight_std`` (optional): every other weight as N(0, weight_std) instead of the init's N(0, 0.01);
- ``orbax_dir`` (or null): also save the params as an Orbax checkpoint in the published layout.

The npz holds every parameter under its '/'-joined path (as float32), ``logits`` (float32 [B, T, V]) of
the full forward pass with the model's default mask and positions, and ``__tree_paths__``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from gemma import gm
from orbax import checkpoint as ocp

NORM_NOISE = 0.1
INIT_STD = 0.01  # the official Einsum and Embedder initialiser: nn.initializers.normal()


def build_config(fields: dict[str, Any]) -> Any:
    """The official TransformerConfig; only the two enum-valued fields need translating from JSON."""
    fields = dict(fields)
    fields["attention_types"] = tuple(gm.nn.AttentionType[name.upper()] for name in fields["attention_types"])
    if "query_pre_attn_norm" in fields:
        fields["query_pre_attn_norm"] = gm.nn.config.QueryPreAttentionNormalisation[
            fields["query_pre_attn_norm"]
        ]
    return gm.nn.config.TransformerConfig(**fields)


def perturb_norms(params: Any, key: jax.Array) -> Any:
    """Add N(0, 0.1) to every RMSNorm scale: zero-initialised norms would hide a mapping mistake."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        leaf + (NORM_NOISE * jax.random.normal(leaf_key, leaf.shape)).astype(leaf.dtype)
        if path[-1].key == "scale"
        else leaf
        for (path, leaf), leaf_key in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def rescale_weights(params: Any, weight_std: float) -> Any:
    """Every non-norm weight as N(0, weight_std): at the init's 0.01 attention is nearly uniform, which
    would hide RoPE, mask and soft-cap mistakes."""
    factor = weight_std / INIT_STD
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if path[-1].key == "scale" else (leaf * factor).astype(leaf.dtype), params
    )


def flat_params(params: Any) -> dict[str, jax.Array]:
    """{'layer_0/attn/q_einsum/w': array, ...}: the nested Flax tree under '/'-joined paths."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(entry.key for entry in path): leaf for path, leaf in leaves}


def save_published_layout(params: Any, directory: Path) -> None:
    """Save like the released Gemma checkpoints: Orbax, 'transformer/'-prefixed semi-flat keys
    ({'transformer/layer_0/attn/q_einsum': {'w': ...}}), the MLP weights wrapped in a 'w' leaf."""
    flat: dict[str, dict[str, jax.Array]] = {}
    for path, leaf in flat_params(params).items():
        module, name = path.rsplit("/", 1)
        if module.endswith("/mlp"):
            module, name = path, "w"
        flat.setdefault(f"transformer/{module}", {})[name] = leaf
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory.absolute(), flat)
    checkpointer.wait_until_finished()
    # Prove the official loader reads it back (it detects the layout) as the very same tree.
    restored = gm.ckpts.load_params(directory.absolute())
    jax.tree.map(np.testing.assert_array_equal, restored, params)


def main(request_path: str, output_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    dtype = jnp.dtype(request.get("dtype", "float32"))
    model = gm.nn.Transformer(config=build_config(request["config"]), dtype=dtype)
    tokens = jnp.asarray(request["tokens"], dtype=jnp.int32)
    init_key, norm_key = jax.random.split(jax.random.key(request.get("seed", 0)))
    params = model.init(init_key, tokens=tokens)["params"]
    if request.get("weight_std") is not None:
        params = rescale_weights(params, request["weight_std"])
    if request.get("perturb_norms", True):
        params = perturb_norms(params, norm_key)
    logits = model.apply({"params": params}, tokens=tokens).logits
    if request.get("orbax_dir"):
        save_published_layout(params, Path(request["orbax_dir"]))
    # npz has no bfloat16; float32 holds every bfloat16 value exactly.
    arrays = {path: np.asarray(leaf, dtype=np.float32) for path, leaf in flat_params(params).items()}
    np.savez(
        output_path,
        logits=np.asarray(logits, dtype=np.float32),
        __tree_paths__=np.array(sorted(arrays)),
        **arrays,
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
