"""LoRA: low-rank adapters beside frozen weights. Each adapted weight W gets W + (alpha / rank) * A B,
where A maps the embedding axis to ``rank`` and B maps ``rank`` to the weight's other axes, so one rule
covers q/k/v ([N, D, H]), the output projection ([N, H, D]) and the feed-forward ([D, F], [F, D]).
B starts at zero: training begins exactly at the base model."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
TARGETS = (
    "attn']['q'",
    "attn']['k'",
    "attn']['v'",
    "attn']['o'",
    "mlp']['gate'",
    "mlp']['up'",
    "mlp']['down'",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    rank: int
    alpha: float
    embed_axes: tuple[tuple[str, int], ...]  # (weight name, index of its embedding axis)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def axis(self, name: str) -> int | None:
        return dict(self.embed_axes).get(name)


def name_of(path: Any) -> str:
    """A stable, file-name-safe name for a tree path (also the checkpoint's item names)."""
    return re.sub(r"[^A-Za-z0-9_]+", ".", jax.tree_util.keystr(path)).strip(".").removesuffix(".value")


def settings(params: nnx.State[str, Any], rank: int, alpha: float) -> Settings:
    """Which weights get adapters, found from each parameter's ``logical_axes``."""
    found = []
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, variable in leaves:
        key = jax.tree_util.keystr(path)
        axes = variable.get_metadata().get("logical_axes", ())
        if any(t in key for t in TARGETS) and "embed" in axes:
            found.append((name_of(path), axes.index("embed")))
    return Settings(rank, alpha, tuple(found))


def init(params: Any, s: Settings, key: Array) -> dict[str, dict[str, Array]]:
    """A ~ N(0, 1/D), B = 0, in the parameters' dtype."""
    out: dict[str, dict[str, Array]] = {}
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = name_of(path)
        axis = s.axis(name)
        if axis is None:
            continue
        d = w.shape[axis]
        rest = math.prod(w.shape) // d
        key, sub = jax.random.split(key)
        out[name] = {
            "a": jax.random.normal(sub, (d, s.rank), w.dtype) * d**-0.5,
            "b": jnp.zeros((s.rank, rest), w.dtype),
        }
    return out


def delta(w_shape: tuple[int, ...], axis: int, a: Array, b: Array) -> Array:
    """A B laid out like the weight: embedding axis where the weight has it."""
    rest = tuple(n for i, n in enumerate(w_shape) if i != axis)
    low_rank = (a @ b).reshape(w_shape[axis], *rest)
    return jnp.moveaxis(low_rank, 0, axis)


def merged(frozen: Any, adapters: dict[str, dict[str, Array]], s: Settings) -> Any:
    """The frozen weights with every adapter added (used in the step and to export the result)."""

    def one(path: Any, w: Array) -> Array:
        name = name_of(path)
        axis = s.axis(name)
        if axis is None or name not in adapters:
            return w
        ab = adapters[name]
        return w + (s.scale * delta(w.shape, axis, ab["a"], ab["b"])).astype(w.dtype)

    return jax.tree_util.tree_map_with_path(one, frozen)
