"""XLA:TPU's memory-usage report as ``plan.compiled`` reads it (``plan.usage``): its HBM total is the bytes
the out-of-memory message names when a program does not fit, the memory analysis's total for a plain
program that fits, and less than the memory analysis on a training step with its layers in a scan (the
compiler packs buffers never live at once into the same bytes; the analysis counts each apart), where a
plan's peak is the report's; its largest allocations name the shapes that hold them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import preset
from gemma_runtime.plan import training
from gemma_runtime.plan.compiled import Program, compile_one, required_bytes
from gemma_runtime.plan.topology import slice_devices


def _compile(size: int) -> Program:
    [device] = slice_devices("v5e", "2x2")[:1]
    mesh = Mesh(np.array([device]), ("x",))
    x = jax.ShapeDtypeStruct((size, 1024), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))

    def step(x: jax.Array) -> jax.Array:  # two temporaries of x's size, then a reduction
        return jnp.sum(jnp.sin(x) * jnp.cos(x).T.T, axis=0)

    return compile_one("step", jax.jit(step).lower(x))


def test_report_total_is_what_a_program_that_does_not_fit_needs() -> None:
    program = _compile(6 << 20)  # 24 GiB per f32 temporary
    assert not program.fits
    needed = required_bytes(program.error or "")
    assert needed is not None
    assert program.hbm_bytes is not None
    assert abs(program.hbm_bytes - needed) < 0.01 * needed
    assert program.peak_bytes == needed
    [largest, *_] = program.largest_buffers
    assert f"f32[{6 << 20},1024]" in largest.shapes


def test_report_total_of_a_plain_program_that_fits() -> None:
    program = _compile(1 << 10)
    assert program.fits
    assert program.hbm_bytes is not None
    assert abs(program.hbm_bytes - program.total_bytes) < 0.01 * program.total_bytes
    assert program.peak_bytes == program.hbm_bytes
    assert program.largest_buffers


def test_a_scanned_training_step_spans_less_hbm_than_its_memory_analysis_sums() -> None:
    """Gemma 2B, two layers in a scan, 1,024 tokens a row, one row per chip of a v5e 2x2 (about 30 s):
    measured 5.39 GiB of HBM against 5.90 GiB in the memory analysis."""
    devices = slice_devices("v5e", "2x2")
    config = TrainConfig.model_validate(
        {
            "name": "scanned",
            "model": {"variant": "gemma-2b"},
            "data": {"path": "unused"},
            "training": {"steps": 1, "sequence_length": 1024, "global_batch_size": 4, "remat": "full"},
            "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        }
    )
    assert config.training.scan_layers
    program = compile_one("train", training.lower(config, devices, preset("gemma-2b").replace(num_layers=2)))
    assert program.fits
    assert program.hbm_bytes is not None
    assert program.hbm_bytes < 0.95 * program.total_bytes, (program.hbm_bytes, program.total_bytes)
    assert program.peak_bytes == program.hbm_bytes
