"""Build the ``data`` x ``fsdp`` x ``tensor`` device mesh from config, checked against the devices."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor")


def resolve_shape(data: int, fsdp: int, tensor: int, devices: int) -> tuple[int, int, int]:
    """Fill the one axis given as -1 so the product equals ``devices``; explain any mismatch."""
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh {shape}: at most one of data, fsdp and tensor may be -1")
    known = math.prod(a for a in shape if a != -1)
    if -1 in shape:
        if devices % known:
            raise ValueError(f"mesh {shape}: {known} does not divide the {devices} devices present")
        shape[shape.index(-1)] = devices // known
    if math.prod(shape) != devices:
        raise ValueError(f"mesh data*fsdp*tensor = {math.prod(shape)} but {devices} devices are present")
    return shape[0], shape[1], shape[2]


def split_over_slices(shape: tuple[int, int, int], slices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(per-slice ICI shape, DCN shape): only ``data`` spans slices, so the gradient all-reduce is the
    one collective that crosses the slower data-centre network (as MaxText does)."""
    if shape[0] % slices:
        raise ValueError(f"mesh data axis {shape[0]} is not a multiple of the {slices} slices")
    return (shape[0] // slices, shape[1], shape[2]), (slices, 1, 1)


def make_mesh(
    data: int = 1,
    fsdp: int = -1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
    *,
    slices: int = 1,
) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_shape(data, fsdp, tensor, len(devices))
    if slices == 1:
        return Mesh(np.array(devices).reshape(shape), AXES)
    from jax.experimental import mesh_utils

    ici, dcn = split_over_slices(shape, slices)
    return Mesh(mesh_utils.create_hybrid_device_mesh(ici, dcn, devices), AXES)
