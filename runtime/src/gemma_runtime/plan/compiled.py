"""What XLA reports about one compiled program, per chip: its memory analysis (the bytes of its arguments,
outputs and temporaries, and the donated bytes that outputs reuse), the HBM its buffer assignment spans
(``plan.usage``: what the compiler checks against the chip), its FLOPs and bytes accessed, and the cost
model's time. A program that does not fit fails to compile; its figures are then the compiler's message.

Two traps (shared/reference/tpu-aot.md): the cost model's ``optimal_seconds`` comes back negative on large
programs, so it is kept only where positive and always labelled as XLA's estimate; and ``flops`` counts a
loop body once and a custom call (a Pallas kernel) as nothing: a training step with scanned layers or
splash attention takes its FLOPs from unrolled compiles instead (``plan.training``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gemma_runtime.plan import usage

# The two forms of XLA:TPU's out-of-memory message: "... required for HLO temporaries (19.53G) exceeds
# available HBM (15.75G)" and "... Used 31.25G of 31.25G hbm. Exceeded hbm capacity by 72.0K".
_EXCEEDS = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT])\)|Used ([\d.]+)([KMGT]) of")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program's figures, per chip."""

    name: str
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0  # outputs written into donated arguments (the KV cache, the training state)
    temp_bytes: int = 0
    flops: float = 0.0
    bytes_accessed: float = 0.0
    optimal_seconds: float | None = None  # XLA:TPU cost-model estimate, only where positive
    compile_seconds: float = 0.0
    error: str | None = None  # the compiler's message when the program does not fit
    flops_source: str = "XLA's count of the compiled program"  # where flops and bytes_accessed come from
    hbm_bytes: int | None = None  # the HBM its buffer assignment spans, where XLA reported it
    largest_buffers: tuple[usage.Buffer, ...] = ()

    @property
    def fits(self) -> bool:
        return self.error is None

    @property
    def total_bytes(self) -> int:
        """XLA's memory analysis: arguments, outputs not written in place, temporaries (each temporary
        allocation counted apart, see ``plan.usage``); from the compiler's message when it did not fit."""
        if self.error is not None:
            return required_bytes(self.error) or 0
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def peak_bytes(self) -> int:
        """The HBM the program needs per chip, as the compiler counts it against the chip: its buffer
        assignment's span where reported (the memory analysis otherwise), the out-of-memory message's
        figure when it did not fit. Whether it fits is whether it compiled."""
        if self.error is None and self.hbm_bytes is not None:
            return self.hbm_bytes
        return self.total_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "total_bytes": self.total_bytes,
            "peak_bytes": self.peak_bytes,
            "fits": self.fits,
        }


def required_bytes(message: str) -> int | None:
    """The bytes an out-of-memory message says the program needs (e.g. "(19.53G)"), else None."""
    match = _EXCEEDS.search(message)
    if match is None:
        return None
    value, unit = (match[1], match[2]) if match[1] else (match[3], match[4])
    return int(float(value) * _UNITS[unit])


def compile_one(name: str, lowered: Any) -> Program:
    """Compile ``lowered`` and read its figures; each compile is logged (they take minutes)."""
    log.info("compiling %s", name)
    with tempfile.TemporaryDirectory(prefix="gemma-plan-xla-") as folder:
        program = _compile(name, lowered, Path(folder))
    log.info(
        "compiled %s in %.0f s: %.2f GiB per chip, %s",
        name,
        program.compile_seconds,
        program.peak_bytes / (1 << 30),
        "fits" if program.fits else "does not fit",
    )
    return program


def _compile(name: str, lowered: Any, dump: Path) -> Program:
    started = time.monotonic()
    try:  # the dump holds XLA:TPU's memory-usage report
        compiled = lowered.compile(compiler_options={"xla_dump_to": str(dump)})
    except Exception as err:  # JaxRuntimeError; its type is not public API
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        report = usage.read(dump)
        return Program(
            name,
            compile_seconds=time.monotonic() - started,
            error=str(err).splitlines()[0],
            hbm_bytes=report.hbm_bytes if report else None,
            largest_buffers=report.largest if report else (),
        )
    seconds = time.monotonic() - started
    report = usage.read(dump)
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    optimal = float(cost.get("optimal_seconds", -1.0))
    return Program(
        name,
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        optimal_seconds=optimal if optimal > 0 else None,
        compile_seconds=seconds,
        hbm_bytes=report.hbm_bytes if report else None,
        largest_buffers=report.largest if report else (),
    )


def compile_all(programs: Sequence[tuple[str, Any]], workers: int | None = None) -> list[Program]:
    """Compile lowered programs side by side (XLA compiles one program on one core, outside Python's
    lock), in their order."""
    workers = max(1, min(len(programs), workers or os.cpu_count() or 1))
    if workers == 1:
        return [compile_one(name, lowered) for name, lowered in programs]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: compile_one(*p), programs))
