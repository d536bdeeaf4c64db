"""Reference implementations live in their own virtual environments, created once per machine and
cached outside the repo (``$XDG_CACHE_HOME/gemma-operator/reference/<name>-<hash of the pins>/``), and
talk to our tests only through files: a JSON request in, an npz of arrays out, never imports."""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).parent
MARKER = ".install-complete"
PYTHON_VERSION = (3, 11)  # the pins were frozen there: wheels are per Python version
INSTALL_TIMEOUT_S = 3600.0


def require_reference(reason: str) -> None:
    """Skip a test whose reference cannot run, or fail it where ``GEMMA_REQUIRE_REFERENCES=1`` (CI)."""
    if os.environ.get("GEMMA_REQUIRE_REFERENCES") == "1":
        pytest.fail(f"GEMMA_REQUIRE_REFERENCES=1 but {reason}")
    pytest.skip(reason)


class ReferenceUnavailableError(RuntimeError):
    """A reference venv could not be created; the message says why."""


class ReferenceRunError(RuntimeError):
    """A worker ran in a reference venv and failed; the message carries its stderr."""


_FAILED: dict[Path, str] = {}


def venv_dir(name: str, requirements: Path) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    return Path(cache) / "gemma-operator" / "reference" / f"{name}-{digest}"


def ensure_venv(name: str, requirements: Path, smoke_test: str, log: Callable[[str], None] = print) -> Path:
    """The python of a venv holding exactly ``requirements``: reused when its marker says the install
    completed, else built (once per machine; one builder at a time)."""
    target = venv_dir(name, requirements)
    python = target / "bin" / "python"
    if (target / MARKER).is_file() and python.exists():
        return python
    if target in _FAILED:  # one attempt per process, not one per test module
        raise ReferenceUnavailableError(_FAILED[target])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.with_name(target.name + ".lock"), log):
            # Another process may have finished the build while we waited for the lock.
            if not ((target / MARKER).is_file() and python.exists()):
                _build(target, requirements, smoke_test, log)
    except OSError as err:
        _FAILED[target] = f"cannot create the {name} reference venv in {target}: {err}"
        raise ReferenceUnavailableError(_FAILED[target]) from err
    except ReferenceUnavailableError as err:
        _FAILED[target] = str(err)
        raise
    return python


def run_worker(
    python: Path, script: Path, request: dict[str, Any], workdir: Path, timeout: float = 900.0
) -> dict[str, np.ndarray]:
    """Run ``script request.json out.npz`` with the reference python; return the arrays it saved.
    The worker runs in ``workdir``, so relative paths in the request are taken from there."""
    workdir.mkdir(parents=True, exist_ok=True)
    request_path, output = workdir / f"{script.stem}-request.json", workdir / f"{script.stem}.npz"
    request_path.write_text(json.dumps(request))
    try:
        # -I: no PYTHONPATH, no user site, no script folder on sys.path; nothing of ours leaks in.
        done = subprocess.run(
            [str(python), "-I", str(script), str(request_path), str(output)],
            cwd=workdir,
            env=_worker_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ReferenceRunError(f"{script.name} ran past {timeout:.0f} s:\n{_tail(err.stderr)}") from err
    if done.returncode != 0:
        raise ReferenceRunError(f"{script.name} failed (exit {done.returncode}):\n{_tail(done.stderr)}")
    with np.load(output, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# Our venv's and our tests' settings, which must not reach the reference interpreter.
_LEAKY_ENV = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XLA_FLAGS"}


def _worker_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _LEAKY_ENV}
    # CPU only (deterministic, and no GPU probing by JAX or TensorFlow); TensorFlow's C++ logs off.
    return env | {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-limit:]


@contextmanager
def _exclusive(lock_path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """One builder at a time across processes (pytest-xdist workers, parallel sessions)."""
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[reference] waiting for another process to finish building {lock_path.stem}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_python() -> str:
    """A Python of the version the pins were frozen on."""
    seen = []
    for candidate in ("python3.11", "python3", sys.executable):
        path = shutil.which(candidate)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        version = tuple(int(part) for part in probe.stdout.split()) if probe.returncode == 0 else ()
        if version == PYTHON_VERSION:
            return path
        seen.append(f"{path} ({'.'.join(map(str, version)) or 'broken'})")
    wanted = ".".join(map(str, PYTHON_VERSION))
    raise ReferenceUnavailableError(
        f"needs Python {wanted} to build the venv; found only {', '.join(seen) or 'none'}"
    )


def _build(target: Path, requirements: Path, smoke_test: str, log: Callable[[str], None]) -> None:
    # Build beside the target, then rename: a crash never leaves a venv that looks complete.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    log(f"[reference] building {target.name} in {target} (once; reused afterwards)")
    try:
        subprocess.run(
            [_base_python(), "-m", "venv", str(partial)], check=True, capture_output=True, text=True
        )
        python = str(partial / "bin" / "python")
        _pip_install(python, requirements, log)
        smoke = subprocess.run(
            [python, "-I", "-c", smoke_test],
            capture_output=True,
            text=True,
            env=_worker_env(),
            check=False,
        )
        if smoke.returncode != 0:
            raise ReferenceUnavailableError(
                f"the {target.name} venv does not import what it must:\n{_tail(smoke.stderr)}"
            )
        seconds = time.monotonic() - started
        (partial / MARKER).write_text(
            json.dumps({"requirements": requirements.name, "seconds": round(seconds)})
        )
        shutil.rmtree(target, ignore_errors=True)  # a leftover without the marker
        # Only `bin/python` is ever run; it is a symlink to the base interpreter and finds its venv
        # through pyvenv.cfg, so the rename is safe (console-script shebangs would not be).
        partial.rename(target)
        log(f"[reference] reference venv ready in {seconds:.0f} s")
    except (OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        detail = f"\n{_tail(err.stderr)}" if isinstance(err, subprocess.CalledProcessError) else ""
        raise ReferenceUnavailableError(f"cannot create the {target.name} venv: {err}{detail}") from err
    except ReferenceUnavailableError:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _pip_install(python: str, requirements: Path, log: Callable[[str], None]) -> None:
    """pip install -r the pins, logging one line per package so a long cold build shows progress."""
    total = sum(1 for line in requirements.read_text().splitlines() if line and not line.startswith("#"))
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    last = collections.deque[str](maxlen=40)
    collected = 0
    with subprocess.Popen(
        [*command, "-r", str(requirements)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        watchdog = threading.Timer(INSTALL_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip()
                last.append(line)
                if line.startswith(("Collecting ", "Requirement already satisfied")):
                    collected += 1
                    log(f"[reference] ({collected}/{total}) {line}")
                elif line.startswith(("Installing collected", "Successfully installed", "ERROR")):
                    log(f"[reference] {line[:200]}")
            code = process.wait()
        finally:
            watchdog.cancel()
    if code != 0:
        errors = [line for line in last if line.startswith("ERROR")]
        reason = "timed out" if code == -9 else f"failed (exit {code}): {errors[-1] if errors else ''}"
        raise ReferenceUnavailableError(f"pip install -r {requirements.name} {reason}\n" + "\n".join(last))
