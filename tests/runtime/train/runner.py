"""Run `gemma-runtime train` in child processes (simulated device counts need a fresh JAX)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.runtime import simulated

RUNTIME = [sys.executable, "-m", "gemma_runtime"]


def config(tmp: Path, name: str = "t", **changes: Any) -> Path:
    """A TrainConfig file for the tiny preset on the shipped sample text."""
    doc: dict[str, Any] = {
        "name": name,
        "model": {"variant": "tiny"},
        "data": {"path": str(sample()), "format": "text"},
        "training": {
            "steps": 20,
            "global_batch_size": 8,
            "sequence_length": 64,
            "learning_rate": 3e-3,
            "warmup_steps": 5,
            "precision": "f32",
            "remat": "none",
        },
        "port": 0,
    }
    for key, value in changes.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and key in doc else value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sample() -> Path:
    from gemma_runtime.train.command import sample_data

    return sample_data()


def train(
    args: list[str], *, devices: int = 1, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNTIME, "train", "--no-progress", *args],
        env=simulated.env(devices, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(args: list[str], *, devices: int = 1, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RUNTIME, "train", "--no-progress", *args],
        env=simulated.env(devices, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def outputs(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[str]:
    """What each started process printed, once all have exited; every one is killed if one overruns."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()  # reaped and its pipe closed


def losses(metrics_file: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, metrics_file.read_text().splitlines())}


def sigterm_after(proc: subprocess.Popen[str], metrics_file: Path, steps: int, timeout: float = 300) -> str:
    """SIGTERM a started run once its metrics file has ``steps`` logged steps (as a preemption stops a
    pod); returns what it printed once it exited. It is killed if anything goes wrong."""
    try:
        deadline = time.monotonic() + timeout
        while not (metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= steps):
            assert proc.poll() is None, "the run ended before the stop"
            assert time.monotonic() < deadline, f"fewer than {steps} steps in {timeout:.0f} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return out
