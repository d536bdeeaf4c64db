"""The committed compiler figures (``serving-figures.json``, which the memory model is checked against
in ``tests/unit/runtime/test_memory_compiler.py``) are today's: every cell's program, lowered again from
today's code for its host, has the fingerprint its figures were compiled from, with the same jax and
libtpu. A change to the serving step, the layout or the compiler makes this fail until
``make tpu-figures`` compiles the changed cells again."""

from __future__ import annotations

import pytest

from tests.tpu.cells import Cell, cells, fingerprint, load, versions

FIGURES = load()


def test_the_figures_come_from_this_compiler() -> None:
    assert FIGURES["versions"] == versions(), "another jax or libtpu: run make tpu-figures"


@pytest.mark.parametrize("cell", cells(), ids=lambda c: c.key)
def test_the_figures_are_of_todays_program(cell: Cell) -> None:
    record = FIGURES["cells"].get(cell.key)
    assert record is not None, f"{cell.key}: no compiled figures; run make tpu-figures"
    assert record["fingerprint"] == fingerprint(cell), (
        f"{cell.key}: the serving step or its layout changed since its figures were compiled; run make "
        "tpu-figures"
    )
