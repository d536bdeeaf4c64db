"""The README's "what fits where" table, generated from the memory model (``gemma_runtime.memory``, the
arithmetic the operator and the runtime check), between ``<!-- fits:start -->`` and ``<!-- fits:end -->``.
``make manifests`` rewrites it; a unit test fails when the README is stale."""

from __future__ import annotations

from gemma_runtime.memory import MAX_AUTO_SLOTS, GiB, PlanError, host_chips, plan_serving
from gemma_runtime.variants import preset

START, END = "<!-- fits:start -->", "<!-- fits:end -->"
VARIANTS = [
    "gemma3-1b", "gemma-2b", "gemma2-2b", "gemma3-4b", "gemma-7b", "gemma2-9b", "gemma3-12b",
    "gemma2-27b", "gemma3-27b",
]  # fmt: skip
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


def table() -> str:
    header = ["model", "parameters", "bf16 weights"] + [f"{t} `{topo}`" for t, topo in HOSTS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in VARIANTS:
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


def readme_with_table(readme: str) -> str:
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table()}\n{END}{after}"
