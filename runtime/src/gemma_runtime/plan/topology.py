"""TPU slices as XLA's TPU compiler sees them, on a machine without a TPU.

libtpu (the ``tpu-plan`` extra) describes any slice: ``jax.experimental.topologies.get_topology_desc``
gives its devices, with their process (host) and coordinates, and a program jitted over a mesh of them
compiles exactly as it would on the slice. Nothing runs and nothing is allocated. The host shape is passed
explicitly: left to itself, libtpu splits v5e and v6e ``2x4`` over two 4-chip hosts, where the API's
``2x4`` is one 8-chip host unless ``chipsPerHost: 4`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

from gemma_runtime import accelerators

# Chips per host -> libtpu's chips_per_host_bounds (x, y, z).
_HOST_BOUNDS = {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 4, 1)}


class TopologyError(RuntimeError):
    """libtpu is missing or does not know the slice; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published and compiler figures of one chip of a TPU generation."""

    name: str
    usable_bytes: int  # what one program may use, as the compiler decides
    peak_flops: float  # dense bf16, per second
    hbm_bytes_per_s: float


def chip(tpu_type: str) -> Chip:
    tpu = accelerators.TPUS[tpu_type]
    return Chip(tpu.name, tpu.usable_hbm_bytes, tpu.peak_bf16_tflops * 1e12, tpu.hbm_gb_per_s * 1e9)


def available() -> bool:
    """Whether libtpu (the compiler) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def slice_devices(tpu_type: str, topology: str, chips_per_host: int | None = None) -> list[Any]:
    """Every device of the slice (all hosts), in libtpu's order, for compiling only."""
    tpu = accelerators.tpu_slice(tpu_type, topology, chips_per_host)
    if not available():
        raise TopologyError(
            "compiling for a TPU needs libtpu: pip install 'gemma-runtime[tpu-plan]' (the memory model "
            "alone answers without it: gemma-runtime serve --dry-run)"
        )
    # libtpu takes /tmp/libtpu_lockfile, one process per machine, to guard the chips; compiling opens
    # none, so plans may run beside each other (and beside a job on a TPU VM).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
        platform="tpu",
        topology_name=f"{tpu_type}:{topology}",
        chips_per_host_bounds=_HOST_BOUNDS[tpu.chips_per_host],
    )
    devices: list[Any] = list(desc.devices)
    if len(devices) != tpu.chips:
        raise TopologyError(
            f"libtpu describes {tpu_type} {topology} with {len(devices)} chips, not {tpu.chips}"
        )
    return devices


def host_devices(devices: list[Any], process: int = 0) -> list[Any]:
    """The devices of one host (process) of a slice: what a serving pod holds."""
    return [d for d in devices if d.process_index == process]
