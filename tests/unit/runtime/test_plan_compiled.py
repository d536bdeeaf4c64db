"""One compile of ``gemma_runtime.plan.compiled``: the figures of a program XLA compiled (here for the CPU)
and the two log lines around it, which are a plan's progress (each TPU compile takes minutes)."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import pytest

from gemma_runtime.plan.compiled import compile_one


def test_a_compile_reads_its_figures_and_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    x = jax.ShapeDtypeStruct((256, 1024), jnp.float32)
    lowered = jax.jit(lambda x: jnp.sin(x) @ x.T).lower(x)
    with caplog.at_level(logging.INFO, logger="gemma_runtime.plan.compiled"):
        program = compile_one("step 256", lowered)
    assert program.fits
    assert program.argument_bytes == 256 * 1024 * 4
    assert program.output_bytes == 256 * 256 * 4
    assert program.flops >= 2 * 256 * 256 * 1024
    started, done = (r.getMessage() for r in caplog.records)
    assert started == "compiling step 256"
    assert done.startswith(f"compiled step 256 in {program.compile_seconds:.0f} s: ")
    assert done.endswith(f"{program.total_bytes / 2**30:.2f} GiB per chip, fits")
