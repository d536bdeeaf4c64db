"""Never lose more than a checkpoint interval: 20 steps straight equal 10 steps, SIGKILL, resume and 10
more, bit for bit and batch for batch; SIGTERM saves the current step and exits for a restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np

from gemma_runtime.checkpoint import store
from gemma_runtime.config import INTERRUPTED_EXIT_CODE
from tests.runtime.train import runner

# Slow enough steps (~0.3 s here) that the kill lands well inside steps 11-20.
ARGS = [
    "--steps",
    "20",
    "--checkpoint-every",
    "10",
    "--seq-len",
    "256",
    "--batch-size",
    "16",
    "--log-every",
    "1",
]


def _params(directory: Path) -> dict[str, np.ndarray]:
    return {name: array for name, array, _ in store.tensors(directory / "model")}


def _committed(directory: Path, step: int) -> bool:
    return (directory / str(step) / "_CHECKPOINT_METADATA").exists()


def test_a_resume_after_sigkill_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    done = runner.train([*ARGS, "--output", str(straight), "--metrics-file", str(tmp_path / "a.jsonl")])
    assert done.returncode == 0, done.stderr[-3000:]

    proc = runner.start([*ARGS, "--output", str(resumed), "--metrics-file", str(tmp_path / "b.jsonl")])
    try:
        deadline = time.monotonic() + 300
        while not _committed(resumed, 10):
            assert proc.poll() is None, "the run ended before its step-10 checkpoint"
            assert time.monotonic() < deadline, "no checkpoint at step 10"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not _committed(resumed, 20), "the run finished before the kill: nothing was tested"
    steps_before = sorted(runner.losses(tmp_path / "b.jsonl"))
    assert steps_before[-1] < 20

    again = runner.train([*ARGS, "--output", str(resumed), "--metrics-file", str(tmp_path / "c.jsonl")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at step 10 (data epoch" in again.stderr
    a, c = runner.losses(tmp_path / "a.jsonl"), runner.losses(tmp_path / "c.jsonl")
    assert sorted(c) == list(range(11, 21))
    assert {s: a[s] for s in c} == c  # the same batches in the same order, the same numbers
    one, two = _params(straight), _params(resumed)
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_sigterm_saves_the_current_step_and_asks_for_a_restart(tmp_path: Path) -> None:
    output, metrics = tmp_path / "run", tmp_path / "m.jsonl"
    proc = runner.start(
        [
            "--steps",
            "500",
            "--checkpoint-every",
            "1000",
            "--output",
            str(output),
            "--metrics-file",
            str(metrics),
            "--log-every",
            "1",
        ]
    )
    out = runner.sigterm_after(proc, metrics, 5)
    assert proc.returncode == INTERRUPTED_EXIT_CODE, out[-3000:]
    last = max(runner.losses(metrics))
    assert 5 <= last < 500
    assert f"stop requested (SIGTERM): saving step {last} before exit" in out
    assert _committed(output, last)
    assert not (output / "model").exists()  # an unfinished run exports nothing
