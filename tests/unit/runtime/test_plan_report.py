"""A compiled plan as text and JSON (``gemma_runtime.plan.report``): the peak is the HBM the compiler's
buffer assignment spans where it reported one, not the memory analysis's sum, and the text says which
is which only where they differ."""

from __future__ import annotations

import dataclasses

from gemma_runtime.memory import GiB
from gemma_runtime.plan.compiled import Program
from gemma_runtime.plan.report import Plan
from gemma_runtime.plan.topology import chip


def _plan(*programs: Program) -> Plan:
    return Plan("train", "title", {}, chip("v5e"), 16, list(programs), [1e15] * len(programs))


def _program(name: str, temp_gib: float, hbm_gib: float | None) -> Program:
    hbm = int(hbm_gib * GiB) if hbm_gib is not None else None
    return Program(name, argument_bytes=6 * GiB, temp_bytes=int(temp_gib * GiB), hbm_bytes=hbm, flops=1e14)


def test_the_peak_is_what_the_compiler_checks_against_the_chip() -> None:
    # A scanned step whose analysis sums past the chip (19.25 GiB) though it spans 14 GiB and compiled.
    scanned = _program("train", 13.25, 14.0)
    plan = _plan(scanned)
    assert scanned.total_bytes == int(19.25 * GiB)
    assert plan.peak.peak_bytes == 14 * GiB
    text = plan.text()
    assert "peak 14.00 GiB of 15.75 GiB usable per chip (train): fits" in text
    [row] = [line for line in text.splitlines() if line.strip().startswith("train")]
    assert row.split()[1:8] == ["6.00G", "0.00G", "0.00G", "13.25G", "19.25G", "14.00G", "yes"]
    assert "total: XLA's memory analysis" in text
    document = plan.to_dict()
    assert document["peak_bytes"] == 14 * GiB
    assert document["programs"][0]["total_bytes"] == int(19.25 * GiB)


def test_without_a_report_or_a_difference_the_analysis_is_the_peak() -> None:
    plain = _program("decode", 2.0, 8.0)  # the report agrees with the analysis
    unreported = _program("chunk 1024", 3.0, None)
    plan = _plan(plain, unreported)
    assert unreported.peak_bytes == unreported.total_bytes == 9 * GiB
    assert plan.peak is unreported
    text = plan.text()
    assert "peak 9.00 GiB of 15.75 GiB usable per chip (chunk 1024): fits" in text
    assert "total: XLA's memory analysis" not in text


def test_a_program_that_does_not_fit_shows_what_it_needs() -> None:
    message = "RESOURCE_EXHAUSTED: ... Used 16.23G of 15.75G hbm. Exceeded hbm capacity by 492.0M"
    plan = _plan(Program("train", error=message, hbm_bytes=int(16.23 * GiB)))
    assert not plan.fits
    text = plan.text()
    assert "peak 16.23 GiB of 15.75 GiB usable per chip (train): does NOT fit" in text
    [row] = [line for line in text.splitlines() if line.strip().startswith("train")]
    assert row.split()[1:3] == ["16.23G", "no"]


def test_the_memory_model_is_held_to_the_largest_total() -> None:
    """As the committed cell figures are (``tests/tpu/generate.py``): the largest memory-analysis total,
    even where another program spans more HBM."""
    looped = _program("chunk 512", 6.0, 9.0)  # total 12 GiB, HBM 9
    plain = _program("chunk 1024", 4.0, 10.0)  # total 10 GiB, HBM 10: the HBM peak
    plan = dataclasses.replace(
        _plan(looped, plain), memory_model={"total_bytes": int(12.6 * GiB), "summary": "modelled"}
    )
    assert plan.peak is plain
    assert "modelled; +5.0 % against the compiler's total" in plan.text()
