"""The memory model answers to the compiler. For every cell of the README's table that XLA's TPU
compiler checks (``tests/tpu/cells.py``: each preset x v5e 2x2, v5e 2x4, v6e 2x4, v5p 2x2x1 x bf16 and
int8 weights), the layout the memory model plans is the one compiled, its bytes per chip are within 10 %
of the compiler's (or 0.6 GiB on small totals, see ``cells.TOLERANCE_BYTES``), and both say it fits (or
both that it does not).

The compiler's figures are committed (``tests/tpu/serving-figures.json``, ``make tpu-figures``); the tpu
tier (``tests/tpu/test_figures.py``) checks that they are the figures of today's programs."""

from __future__ import annotations

import pytest

from gemma_runtime.memory import GiB
from tests.tpu.cells import TOLERANCE, TOLERANCE_BYTES, Cell, cells, load

FIGURES = load()


@pytest.mark.parametrize("cell", cells(), ids=lambda c: c.key)
def test_the_memory_model_is_within_ten_percent_of_the_compiler(cell: Cell) -> None:
    record = FIGURES["cells"].get(cell.key)
    assert record is not None, f"{cell.key}: no compiled figures; run make tpu-figures"
    plan = cell.plan()
    assert (record["mesh"], record["slots"]) == (str(plan.mesh), plan.slots), (
        f"{cell.key}: the memory model now plans {plan.slots} slots on {plan.mesh}, the figures are for "
        f"{record['slots']} on {record['mesh']}; run make tpu-figures"
    )
    compiler = record["total_bytes"]
    model = plan.total_bytes
    assert abs(model - compiler) <= max(TOLERANCE * compiler, TOLERANCE_BYTES), (
        f"{cell.key}: memory model {model / GiB:.2f} GiB per chip, compiler {compiler / GiB:.2f} GiB "
        f"({(model - compiler) / compiler:+.1%})"
    )
    assert plan.fits == record["fits"], (
        f"{cell.key}: memory model fits={plan.fits}, compiler fits={record['fits']}"
    )
