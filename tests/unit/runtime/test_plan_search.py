"""The search for the largest size that fits (``gemma_runtime.plan.search``), over programs whose bytes
grow linearly with their size as compiled steps do: it finds the boundary in few compiles from either
side, proves it with the next size, stops at the limit, and says when nothing fits; and the bytes a
program needs are read from both forms of XLA:TPU's out-of-memory message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gemma_runtime.plan.compiled import Program, required_bytes
from gemma_runtime.plan.search import largest_fitting

GIB = 1 << 30


def _compiler(base: float, per_size: float, usable: int, compiled: list[int]) -> Callable[[int], Program]:
    def compile_at(size: int) -> Program:
        compiled.append(size)
        total = int(base + per_size * size)
        if total <= usable:
            return Program(f"size {size}", argument_bytes=total)
        message = f"RESOURCE_EXHAUSTED: ... required for HLO temporaries ({total / GIB:.2f}G) exceeds ..."
        return Program(f"size {size}", error=message)

    return compile_at


@pytest.mark.parametrize("start", [1, 40, 78, 200])
def test_finds_and_proves_the_boundary(start: int) -> None:
    compiled: list[int] = []
    usable = int(15.75 * GIB)
    found = largest_fitting(
        _compiler(2.2 * GIB, 0.17 * GIB, usable, compiled), start, usable, 256, slope=0.15 * GIB
    )
    assert found.size == int((15.75 - 2.2) / 0.17)  # 79
    assert found.proven
    assert len(compiled) <= 4


def test_stops_at_the_limit_and_reports_nothing_fitting() -> None:
    usable = 16 * GIB
    capped = largest_fitting(_compiler(GIB, 1000, usable, []), 8, usable, 32)
    assert (capped.size, capped.proven) == (32, True)
    none = largest_fitting(_compiler(20 * GIB, GIB, usable, []), 4, usable, 32)
    assert none.size is None
    assert none.proven  # size 1 was compiled and did not fit


def test_reads_the_bytes_from_an_out_of_memory_message() -> None:
    message = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
        "(19.53G) exceeds available HBM (15.75G)."
    )
    assert required_bytes(message) == int(19.53 * GIB)
    assert Program("x", error=message).total_bytes == int(19.53 * GIB)
    other = (
        "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out of memory "
        "in memory space hbm. Used 15.76G of 15.75G hbm. Exceeded hbm capacity by 15.50M."
    )
    assert required_bytes(other) == int(15.76 * GIB)


def test_chips_with_sparse_cores_compile_one_program_at_a_time() -> None:
    from gemma_runtime.plan.plans import compile_workers

    # Two concurrent compiles of a mixture of experts' step crash libtpu on v6e (SIGSEGV in its
    # SparseCore code generator; one at a time they compile): v6e and v5p get one, v5e what was asked.
    assert compile_workers("v6e", None) == compile_workers("v5p", 4) == 1
    assert (compile_workers("v5e", None), compile_workers("v5e", 3)) == (None, 3)
