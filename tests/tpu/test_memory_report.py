"""The benchmark beside MaxText reads XLA:TPU's memory-usage report (``tests.bench.maxtext_bench``): its
HBM total is the bytes the out-of-memory message names when a program does not fit and, for a plain
program, the memory analysis's total when it does; its largest allocations name the shapes that hold
them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gemma_runtime.plan.compiled import Program, compile_one, required_bytes
from gemma_runtime.plan.topology import slice_devices
from tests.bench.maxtext_bench import _Dumping, memory_report


def _compile(size: int, folder: Path) -> tuple[Program, dict[str, Any]]:
    [device] = slice_devices("v5e", "2x2")[:1]
    mesh = Mesh(np.array([device]), ("x",))
    x = jax.ShapeDtypeStruct((size, 1024), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))

    def step(x: jax.Array) -> jax.Array:  # two temporaries of x's size, then a reduction
        return jnp.sum(jnp.sin(x) * jnp.cos(x).T.T, axis=0)

    program = compile_one("step", _Dumping(jax.jit(step).lower(x), folder))
    return program, memory_report(folder, "jit_step")


def test_report_total_is_what_a_program_that_does_not_fit_needs(tmp_path: Path) -> None:
    program, report = _compile(6 << 20, tmp_path)  # 24 GiB per f32 temporary
    assert not program.fits
    needed = required_bytes(program.error)
    assert needed is not None
    assert abs(report["hbm_report_bytes"] - needed) < 0.01 * needed
    [largest, *_] = report["largest_buffers"]
    assert f"f32[{6 << 20},1024]" in largest["shapes"]


def test_report_total_of_a_program_that_fits(tmp_path: Path) -> None:
    program, report = _compile(1 << 10, tmp_path)
    assert program.fits
    assert abs(report["hbm_report_bytes"] - program.total_bytes) < 0.01 * program.total_bytes
    assert report["largest_buffers"]
