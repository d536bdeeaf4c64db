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
