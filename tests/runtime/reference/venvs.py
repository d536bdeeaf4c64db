"""Reference implementations live in their own virtual environments, created once and cached outside
the repo (``~/.cache/gemma-operator/reference/<name>-<hash of the pins>/``); tests talk to them only
through files: a JSON request in, an npz of arrays out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
DONE = ".install-complete"


class ReferenceUnavailableError(RuntimeError):
    """The reference environment could not be created; the message says why."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemma-operator" / "reference"


def ensure_venv(name: str, requirements: Path, log: Callable[[str], None] = print) -> Path:
    """The python of a venv holding exactly ``requirements``; built on first use, then reused."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    target = cache_dir() / f"{name}-{digest}"
    python = target / "bin" / "python"
    if (target / DONE).exists() and python.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    started = time.monotonic()
    log(f"[reference] creating the {name} environment in {target} (once; cached afterwards)")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(building)], check=True, capture_output=True, text=True
        )
        pip = [str(building / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        install = subprocess.run(
            [*pip, "install", "--no-deps", "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if install.returncode != 0:
            raise ReferenceUnavailableError(
                f"pip install -r {requirements.name} failed:\n{install.stderr[-3000:]}"
            )
    except (OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(building, ignore_errors=True)
        raise ReferenceUnavailableError(f"cannot create the {name} environment: {err}") from err
    except ReferenceUnavailableError:
        shutil.rmtree(building, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    # A venv's scripts name their own folder; the python symlink and `-m` use work after the rename.
    (target / DONE).write_text(f"{time.monotonic() - started:.0f} s\n")
    log(f"[reference] {name} environment ready in {time.monotonic() - started:.0f} s")
    return python


def run_worker(
    python: Path, script: Path, request: dict[str, Any], workdir: Path, timeout: float = 900
) -> dict[str, np.ndarray]:
    """Run ``script request.json out.npz`` with the reference python; return the arrays it saved."""
    workdir.mkdir(parents=True, exist_ok=True)
    request_path, output = workdir / "request.json", workdir / "output.npz"
    request_path.write_text(json.dumps(request))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(python), str(script), str(request_path), str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    with np.load(output, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
