"""A pod promised a TPU or GPU that JAX cannot find stops before it serves or trains, with the reason on
stderr and in its termination message (what the operator shows as Degraded), instead of running on the
CPU in float32. Real runtime processes on this machine, which has neither."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = [sys.executable, "-m", "gemma_runtime"]


def _run(args: list[str], message: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")} | env
    return subprocess.run(
        [*RUNTIME, *args, "--message-file", str(message)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _message(path: Path) -> dict[str, str]:
    document: dict[str, str] = json.loads(path.read_text())
    assert document["reason"] == "AcceleratorMissing"
    return document


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "promised tpu devices but JAX found only cpu"),  # JAX chose the CPU on its own
        ({"JAX_PLATFORMS": "tpu"}, "promised tpu devices but JAX could not start them"),  # as rendered
    ],
    ids=["fallback", "jax-platforms"],
)
def test_a_server_promised_a_tpu_refuses_the_cpu(tmp_path: Path, env: dict[str, str], said: str) -> None:
    message = tmp_path / "termination-log"
    # Before this fix the server started on the CPU: it would serve on this port until the timeout.
    port = str(_free_port())
    done = _run(["serve", "--variant", "tiny", "--accelerator", "v5e:1x1", "--port", port], message, **env)
    assert done.returncode == 1, done.stderr
    assert f"error: accelerator: this pod was {said}" in done.stderr
    assert "Uvicorn running" not in done.stderr
    assert said in _message(message)["error"]
    # This machine has no TPU device nodes: the message says the pod never got the chips.
    assert "did not get google.com/tpu from the node's device plugin" in _message(message)["error"]


def test_a_training_promised_a_gpu_refuses_the_cpu(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    done = _run(["train", "--steps", "1", "--no-progress"], message, JAX_PLATFORMS="cuda")
    assert done.returncode == 1, done.stderr
    assert (
        "error: accelerator: this pod was promised cuda devices but JAX could not start them" in done.stderr
    )
    assert "step" not in _message(message)


def test_a_cpu_pod_still_runs_on_the_cpu(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    done = _run(
        ["serve", "--variant", "tiny", "--accelerator", "cpu", "--dry-run"], message, JAX_PLATFORMS="cpu"
    )
    assert done.returncode == 0, done.stderr
    assert not message.exists()
