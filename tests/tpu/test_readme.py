"""The README's compiled plan of its first GemmaServer (Gemma 2 9B on one v5e 2x4 host), run as written:
the lines the README quotes are what the command prints today, and its compiled figures for the largest
chunk are the committed ones that the memory model is checked against (``serving-figures.json``)."""

from __future__ import annotations

import re

from gemma_runtime.memory import GiB
from tests import readme
from tests.tpu.cells import load


def _quoted(command: str) -> list[str]:
    """The ``text`` block that follows the command in the README."""
    text = readme.README.read_text()
    after = text[text.index(f"\n{command}") :]
    block = re.search(r"```text\n(.*?)```", after, flags=re.DOTALL)
    assert block is not None, "README: no text block after the plan command"
    return [line for line in block[1].splitlines() if line.strip()]


def test_the_readme_plans_its_first_gemma_server() -> None:
    command = readme.find("gemma-runtime plan --variant gemma2-9b")
    printed = readme.run(command, timeout=1800)
    for line in _quoted(command):
        assert line in printed, f"README quotes {line!r}; the command printed:\n{printed}"
    record = load()["cells"]["gemma2-9b v5e 2x4 bf16"]
    for name, program in record["programs"].items():
        total = f"{program['total_bytes'] / GiB:.2f}G"
        row = next(line for line in printed.splitlines() if line.strip().startswith(name))
        assert total in row, (row, program)


def _row(printed: str, start: str) -> list[str]:
    return next(line for line in printed.splitlines() if line.strip().startswith(start)).split()


def test_the_readme_compiles_expert_parallel_serving_of_the_mixture_of_experts() -> None:
    """Gemma 4 26B A4B with its experts split over an expert axis compiles for v6e 2x4, fits, and the
    memory model is within 10 % of the compiler's bytes per chip; the README's table row is what it
    prints."""
    printed = readme.run(readme.find("gemma-runtime plan --variant gemma4-26b-a4b"), timeout=1800)
    assert "mesh data x expert x tensor = 2x2x2), 64 slots x 8192 tokens" in printed
    # "chunk", "1024", arguments, outputs, in place, temporary, total, HBM, fits, ...
    chunk = _row(printed, "chunk 1024")
    assert chunk[8] == "yes", chunk
    compiled = float(chunk[6].removesuffix("G"))
    modelled = re.search(
        r"= ([\d.]+) GiB of [\d.]+ GiB usable.*; ([+-][\d.]+) % against the compiler", printed
    )
    assert modelled is not None, printed
    assert abs(float(modelled[2])) < 10, modelled[0]
    row = next(line for line in readme.README.read_text().splitlines() if line.startswith("| v6e 2x4, 2x2x2"))
    assert f"{compiled:.2f} GiB (weights + KV cache {float(chunk[2].removesuffix('G')):.2f})" in row, row
    assert f"{float(modelled[1]):.2f} GiB ({float(modelled[2]):+.1f} %)" in row, row
