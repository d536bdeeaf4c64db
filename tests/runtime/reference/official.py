"""The official `gemma` JAX package as a parity oracle. Its pins (jax 0.7.2, flax 0.11.2, TensorFlow, ...)
clash with ours, so it lives in its own cached venv (see venvs.py) and answers through files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.runtime.reference.venvs import HERE, ensure_venv, run_worker

REQUIREMENTS = HERE / "official-gemma-requirements.txt"
WORKER = HERE / "official_worker.py"
SMOKE_TEST = "from gemma import gm; import jax, flax, orbax.checkpoint; gm.nn.Transformer"


def ensure_official_venv(log: Callable[[str], None] = print) -> Path:
    return ensure_venv("official-gemma", REQUIREMENTS, SMOKE_TEST, log)


def run_official(request: dict[str, Any], workdir: Path, timeout: float = 900.0) -> dict[str, np.ndarray]:
    """Run official_worker.py on ``request`` (see its docstring); a relative ``orbax_dir`` is taken
    relative to ``workdir``."""
    return run_worker(ensure_official_venv(), WORKER, request, workdir, timeout)
