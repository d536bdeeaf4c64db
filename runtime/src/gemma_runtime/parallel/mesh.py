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


def make_mesh(
    data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_shape(data, fsdp, tensor, len(devices))
    return Mesh(np.array(devices).reshape(shape), AXES)
