"""The Hugging Face transformers reference (PyTorch on CPU), in its own cached venv (see venvs.py): it
keeps 5 GB of torch and CUDA wheels out of the project's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.runtime.reference.venvs import HERE, ensure_venv, run_worker

REQUIREMENTS = HERE / "hf-requirements.txt"
SMOKE_TEST = "import torch, transformers, safetensors"


def run_hf(request: dict[str, Any], workdir: Path) -> dict[str, np.ndarray]:
    return run_worker(ensure_venv("hf", REQUIREMENTS, SMOKE_TEST), HERE / "hf_worker.py", request, workdir)
