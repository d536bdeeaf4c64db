"""The slices as XLA's TPU compiler describes them: the API's topologies map onto libtpu's devices and
hosts (an 8-chip 2x4 host by default, two 4-chip hosts on request, several hosts for the larger slices),
and the usable bytes per chip in the accelerator table are the compiler's own limit: a program of that
size compiles, one a mebibyte larger does not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gemma_runtime import accelerators
from gemma_runtime.plan.compiled import Program, compile_one
from gemma_runtime.plan.topology import host_devices, slice_devices


@pytest.mark.parametrize(
    ("tpu", "topology", "chips_per_host", "hosts"),
    [
        ("v5e", "2x2", None, 1),
        ("v5e", "2x4", None, 1),
        ("v5e", "2x4", 4, 2),
        ("v6e", "2x4", None, 1),
        ("v5e", "4x4", None, 4),
        ("v5p", "2x2x1", None, 1),
        ("v5p", "2x2x2", None, 2),
    ],
)
def test_slices_have_the_tables_hosts(
    tpu: str, topology: str, chips_per_host: int | None, hosts: int
) -> None:
    devices = slice_devices(tpu, topology, chips_per_host)
    expected = accelerators.tpu_slice(tpu, topology, chips_per_host)
    assert len(devices) == expected.chips
    assert len({d.process_index for d in devices}) == hosts == expected.hosts
    assert len(host_devices(devices)) == expected.chips_per_host
    assert {d.platform for d in devices} == {"tpu"}


@pytest.mark.parametrize("tpu", sorted(accelerators.TPUS))
def test_usable_bytes_are_the_compilers_limit(tpu: str) -> None:
    topology = accelerators.TPUS[tpu].single_host_topologies()[0]
    [device] = slice_devices(tpu, topology)[:1]
    mesh = Mesh(np.array([device]), ("x",))
    usable = accelerators.TPUS[tpu].usable_hbm_bytes

    def program(size: int) -> Program:
        array = jax.ShapeDtypeStruct((size,), jnp.int8, sharding=NamedSharding(mesh, PartitionSpec()))
        return compile_one(f"{size} bytes", jax.jit(lambda x: x, donate_argnums=0).lower(array))

    at = program(usable)
    assert at.fits
    assert at.total_bytes == usable
    over = program(usable + (1 << 20))
    assert not over.fits
    assert over.error is not None
    assert "RESOURCE_EXHAUSTED" in over.error
