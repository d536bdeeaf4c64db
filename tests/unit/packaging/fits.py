"""The README's "what fits where" table, generated from the memory model (``gemma_runtime.memory``, the
arithmetic the operator and the runtime check), between ``<!-- fits:start -->`` and ``<!-- fits:end -->``.
``make manifests`` rewrites it; a unit test fails when the README is stale."""

from __future__ import annotations

from gemma_runtime.memory import MAX_AUTO_SLOTS, GiB, PlanError, host_chips, plan_serving
from gemma_runtime.variants import preset

START, END = "<!-- fits:start -->", "<!-- fits:end -->"
COMPILED_START, COMPILED_END = "<!-- fits-compiled:start -->", "<!-- fits-compiled:end -->"
VARIANTS = [
    "gemma3-1b", "gemma-2b", "gemma2-2b", "gemma3-4b", "gemma-7b", "gemma2-9b", "gemma3-12b",
    "gemma2-27b", "gemma3-27b",
]  # fmt: skip
# Gemma 4's sizes, in a table of their own: the compiler has not checked the memory model on them yet.
GEMMA4_START, GEMMA4_END = "<!-- fits-gemma4:start -->", "<!-- fits-gemma4:end -->"
GEMMA4_VARIANTS = ["gemma4-e2b", "gemma4-e4b", "gemma4-12b", "gemma4-26b-a4b", "gemma4-31b"]
HOSTS = [("v5e", "1x1"), ("v5e", "2x2"), ("v5e", "2x4"), ("v6e", "1x1"), ("v6e", "2x4"), ("v5p", "2x2x1")]
SEQUENCE, PREFILL = 4096, 1024


def _cell(variant: str, tpu: str, topology: str, quantization: str) -> str:
    try:
        plan = plan_serving(
            preset(variant),
            dtype="bfloat16",
            quantization=quantization,
            chips=host_chips(tpu, topology),
            max_len=SEQUENCE,
            max_prefill=PREFILL,
        )
    except PlanError:
        return "none"
    slots = f"{plan.slots}+" if plan.slots == MAX_AUTO_SLOTS else str(plan.slots)
    return f"{slots} ({plan.mesh})"


def table(variants: list[str] = VARIANTS) -> str:
    header = ["model", "parameters", "bf16 weights"] + [f"{t} `{topo}`" for t, topo in HOSTS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in variants:
        config = preset(variant)
        cells = [
            f"{_cell(variant, t, topo, 'none')} · int8 {_cell(variant, t, topo, 'int8')}" for t, topo in HOSTS
        ]
        row = [
            f"`{variant}`",
            f"{config.param_count() / 1e9:.2f} B",
            f"{2 * config.param_count() / GiB:.1f} GiB",
        ]
        lines.append("| " + " | ".join(row + cells) + " |")
    return "\n".join(lines)


def compiled_table() -> str:
    """Per chip, the memory model's bytes beside XLA's TPU compiler's for the cells it checks
    (``tests/tpu/cells.py``; committed figures, ``make tpu-figures``): "not compiled" where the figures are
    of another batch or mesh than the model plans."""
    from tests.tpu import cells

    figures = cells.load()["cells"]
    header = ["model", "host", "bf16: batch (mesh)", "memory model", "compiler"]
    header += ["int8: batch (mesh)", "memory model", "compiler"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in VARIANTS:
        for tpu, topology in cells.HOSTS:
            row = [f"`{variant}`", f"{tpu} `{topology}`"]
            for quantization in cells.QUANTIZATIONS:
                cell = cells.Cell(variant, tpu, topology, quantization)
                plan, record = cell.plan(), figures.get(cell.key)
                batch = f"{plan.slots} ({plan.mesh})" if plan.fits else f"none ({plan.slots} needs)"
                current = record is not None and (record["mesh"], record["slots"]) == (
                    str(plan.mesh),
                    plan.slots,
                )
                compiled = _gib(record["total_bytes"], record["fits"]) if current else "not compiled"
                row += [batch, _gib(plan.total_bytes, plan.fits), compiled]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _gib(value: int, fits: bool) -> str:
    return f"{value / GiB:.2f} GiB" + ("" if fits else " (does not fit)")


def _replace(readme: str, start: str, end: str, body: str) -> str:
    before, rest = readme.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{body}\n{end}{after}"


def readme_with_table(readme: str) -> str:
    readme = _replace(readme, START, END, table())
    if GEMMA4_START in readme:
        readme = _replace(readme, GEMMA4_START, GEMMA4_END, table(GEMMA4_VARIANTS))
    if COMPILED_START in readme:
        readme = _replace(readme, COMPILED_START, COMPILED_END, compiled_table())
    return readme
