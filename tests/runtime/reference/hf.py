"""The Hugging Face transformers reference (PyTorch on CPU), in its own cached venv: it keeps 5 GB of
torch and CUDA wheels out of the project's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.runtime.reference.venvs import HERE, ensure_venv, run_worker


def run_hf(request: dict[str, Any], workdir: Path) -> dict[str, np.ndarray]:
    python = ensure_venv("hf", HERE / "hf-requirements.txt")
    return run_worker(python, HERE / "hf_worker.py", request, workdir)
