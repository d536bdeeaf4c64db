"""MaxText's own Python environment, made once and cached: MaxText 0.2.5 needs Python 3.12 (the
project's venv is 3.11) and a newer jax and libtpu than ours, so it lives in its own virtual environment
under ``~/.cache/gemma-operator/maxtext/<version>/venv`` (``GEMMA_MAXTEXT_VENV`` points at another).
The benchmark runs MaxText's compile there, in a subprocess; nothing of it is imported here.

Install recipe (shared/reference/tpu-aot.md): ``maxtext[tpu]==0.2.5``, then ``jax[tpu]==0.12.0.1`` on top
(the versions MaxText 0.2.5 was released against; ``pip check`` is clean): about 2 minutes and 3 GB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MAXTEXT_VERSION = "0.2.5"
JAX_VERSION = "0.12.0.1"
PYTHON = "3.12"
STAMP = ".gemma-operator-complete"  # written last: a venv with it is complete


class EnvError(RuntimeError):
    """MaxText's environment cannot be made here; the message says what is missing."""


def venv_dir(version: str = MAXTEXT_VERSION) -> Path:
    override = os.environ.get("GEMMA_MAXTEXT_VENV")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemma-operator" / "maxtext" / version / "venv"


def _python312() -> str:
    """A Python 3.12 interpreter: ``GEMMA_PYTHON312``, ``python3.12`` on PATH, or pyenv's newest 3.12."""
    candidates = [os.environ.get("GEMMA_PYTHON312", ""), shutil.which(f"python{PYTHON}") or ""]
    pyenv = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))) / "versions"
    if pyenv.is_dir():
        candidates += [
            str(p / "bin" / f"python{PYTHON}") for p in sorted(pyenv.glob(f"{PYTHON}.*"), reverse=True)
        ]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return candidate
    raise EnvError(
        f"MaxText {MAXTEXT_VERSION} needs Python {PYTHON}: install it (e.g. pyenv install 3.12) or set "
        "GEMMA_PYTHON312 to its interpreter"
    )


def ensure_maxtext(version: str = MAXTEXT_VERSION) -> Path:
    """The python of MaxText's venv, created and installed when missing (reused when complete)."""
    venv = venv_dir(version)
    python = venv / "bin" / "python"
    if (venv / STAMP).exists() and python.exists():
        return python
    if venv.exists():  # a half-made one: start again
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"creating MaxText {version}'s environment in {venv}", file=sys.stderr, flush=True)
    subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"maxtext[tpu]=={version}"], check=True)
    subprocess.run([*pip, f"jax[tpu]=={JAX_VERSION}"], check=True)
    (venv / STAMP).write_text(f"maxtext {version}, jax {JAX_VERSION}\n")
    print(f"MaxText's environment ready in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return python


if __name__ == "__main__":
    print(ensure_maxtext())
