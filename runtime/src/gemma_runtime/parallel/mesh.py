"""Build the ``data`` x ``fsdp`` x ``expert`` x ``tensor`` device mesh from config, checked against the
devices. ``expert`` splits a mixture of experts' experts (expert parallelism, ``model/block.py``); a mesh
without expert parallelism leaves the axis out (``data`` x ``fsdp`` x ``tensor``), so every other model's
programs stay exactly as they were (code reads an absent axis as size 1). ``tensor`` is innermost, so
its all-reduces run between neighbouring chips."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "expert", "tensor")


def resolve_shape(data: int, fsdp: int, tensor: int, devices: int, expert: int = 1) -> tuple[int, int, int]:
    """Fill the one axis of data, fsdp and tensor given as -1 so that the product with ``expert`` equals
    ``devices``; explain any mismatch. Returns (data, fsdp, tensor)."""
    if expert < 1:
        raise ValueError(f"mesh expert {expert}: must be at least 1")
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh {shape}: at most one of data, fsdp and tensor may be -1")
    known = math.prod(a for a in shape if a != -1) * expert
    if -1 in shape:
        if devices % known:
            raise ValueError(
                f"mesh {shape}, expert {expert}: {known} does not divide the {devices} devices present"
            )
        shape[shape.index(-1)] = devices // known
    if math.prod(shape) * expert != devices:
        raise ValueError(
            f"mesh data*fsdp*expert*tensor = {math.prod(shape) * expert} but {devices} devices are present"
        )
    return shape[0], shape[1], shape[2]


def split_over_slices(shape: tuple[int, ...], slices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(per-slice ICI shape, DCN shape) of a mesh shape in ``AXES`` order: only ``data`` spans slices, so
    the gradient all-reduce is the one collective that crosses the slower data-centre network (as MaxText
    does)."""
    if shape[0] % slices:
        raise ValueError(f"mesh data axis {shape[0]} is not a multiple of the {slices} slices")
    return (shape[0] // slices, *shape[1:]), (slices,) + (1,) * (len(shape) - 1)


def make_mesh(
    data: int = 1,
    fsdp: int = -1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
    *,
    expert: int = 1,
    slices: int = 1,
) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    data, fsdp, tensor = resolve_shape(data, fsdp, tensor, len(devices), expert)
    sizes = dict(zip(AXES, (data, fsdp, expert, tensor), strict=True))
    axes = tuple(a for a in AXES if a != "expert" or expert > 1)
    shape = tuple(sizes[a] for a in axes)
    if slices == 1:
        return Mesh(np.array(devices).reshape(shape), axes)
    from jax.experimental import mesh_utils

    ici, dcn = split_over_slices(shape, slices)
    return Mesh(mesh_utils.create_hybrid_device_mesh(ici, dcn, devices), axes)
