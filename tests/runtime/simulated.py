"""Run a script in a child process with a number of simulated CPU devices (a device count needs a fresh
JAX) and read the JSON document it prints last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def env(devices: int = 1, xla_flags: str = "", **extra: str) -> dict[str, str]:
    """This environment without its JAX and XLA settings, on ``devices`` simulated CPU devices."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    flags = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
    out.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flags, **extra)
    return out


def run_json(args: list[str], *, devices: int = 8, timeout: float = 600, xla_flags: str = "") -> Any:
    """``python ARGS`` in the repository on ``devices`` simulated devices: the JSON document on the last
    line it prints; the test fails with its stderr when it exits non-zero."""
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env(devices, xla_flags),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
