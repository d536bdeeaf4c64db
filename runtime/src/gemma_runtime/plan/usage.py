"""XLA:TPU's memory-usage report: what the compiler's buffer assignment puts in HBM, per chip.

Compiled with ``xla_dump_to``, XLA:TPU writes ``*after_optimizations-memory-usage-report.txt``: for each
memory space (HBM first), the total bytes its allocations span and every allocation with the values that
share it. The HBM total is what the compiler checks against the chip: a program that does not fit names
the same figure in its out-of-memory message. XLA's memory analysis (``compiled.memory_analysis()``) sums
arguments, outputs and temporaries instead, each temporary allocation apart; the TPU compiler packs
allocations whose values are never live together into the same addresses, so on steps with a loop (a
scan over layers, the loss's chunks) the sum can exceed the HBM total by gigabytes.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

_REPORT = "*after_optimizations-memory-usage-report.txt"
_TOTAL = re.compile(r"Total bytes: (\d+)")
_ROW = re.compile(r"^\s*[\d.]+\w+\(\s*\d+%\);\s*([\d.]+)(\w+);\s*\d+;\s*\d+;\s*(.+)$")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One HBM allocation and the shapes of the values that share it, as XLA lists them."""

    bytes: int
    shapes: str


@dataclasses.dataclass(frozen=True)
class Usage:
    hbm_bytes: int
    largest: tuple[Buffer, ...]  # the largest HBM allocations, largest first


def read(folder: Path, module: str = "", top: int = 6) -> Usage | None:
    """The memory-usage report XLA dumped into ``folder`` (of the module whose name contains ``module``),
    or None where there is none (a compile that failed before buffer assignment, a non-TPU backend)."""
    reports = sorted(folder.glob(f"*{module}{_REPORT}" if module else _REPORT))
    if not reports:
        return None
    lines = reports[0].read_text().splitlines()
    total = _TOTAL.match(lines[1]) if len(lines) > 1 else None
    if total is None:
        return None
    largest: list[Buffer] = []
    for line in lines[4:]:
        match = _ROW.match(line)
        if match is None or len(largest) == top:
            break  # the end of the first (default, HBM) memory space
        largest.append(Buffer(int(float(match[1]) * _UNITS.get(match[2], 1)), match[3].strip()))
    return Usage(int(total[1]), tuple(largest))
