"""Golden files: every sample's children exactly as `gemma-operator render` prints them. After an
intended change, rewrite them with GEMMA_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gemma_operator.offline import render_file
from tests.api_cases import SAMPLE_FILES

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_golden_children(path: Path) -> None:
    text, problems = render_file(path, namespace="team")
    assert problems == []
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("GEMMA_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run with GEMMA_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{path.name} renders differently from {golden.name}"
