"""The ends of a two-process run. A SIGTERM to one process (its pod was deleted or preempted) stops every
process at the same step: they save that step together and all leave with INTERRUPTED_EXIT_CODE, so the
operator restarts the slice without counting a failure (before, the signalled process saved alone and
waited for the others until the kubelet killed it). A run that finishes exports the trained model, each
process writing its own shards (before, the export read every parameter to the host and failed)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from gemma_runtime.checkpoint import store
from gemma_runtime.checkpoint.params import variables
from gemma_runtime.config import INTERRUPTED_EXIT_CODE
from tests.runtime.serve.helpers import free_port
from tests.runtime.train import runner


def _start(cfg: Path, extra: list[str] | None = None) -> list[subprocess.Popen[str]]:
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        runner.start(
            ["--config", str(cfg), "--log-every", "1", *(extra if index == 0 and extra else [])],
            JAX_COORDINATOR_ADDRESS=coordinator,
            JAX_PROCESS_COUNT="2",
            JAX_PROCESS_ID=str(index),
        )
        for index in range(2)
    ]


def test_a_finished_two_process_run_exports_the_model(tmp_path: Path) -> None:
    output = tmp_path / "ckpt"
    cfg = runner.config(
        tmp_path, "done", training={"steps": 3}, checkpoints={"directory": str(output), "interval_steps": 2}
    )
    procs = _start(cfg)
    outputs = runner.outputs(procs, timeout=240)
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    exported = store.restore(output / "model")
    assert exported.config.name == "tiny"
    stored = [name for name, _, _ in store.tensors(output / "model")]
    assert sorted(stored) == sorted(variables(exported))


def test_sigterm_to_one_process_stops_both_at_one_step_with_a_checkpoint(tmp_path: Path) -> None:
    output, metrics = tmp_path / "ckpt", tmp_path / "metrics.jsonl"
    cfg = runner.config(
        tmp_path,
        "stop",
        training={"steps": 2000},
        checkpoints={"directory": str(output), "interval_steps": 1000},
    )
    procs = _start(cfg, ["--metrics-file", str(metrics)])
    try:
        deadline = time.monotonic() + 300
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert all(p.poll() is None for p in procs)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)
    finally:
        outputs = runner.outputs(procs, timeout=120)
    assert [p.returncode for p in procs] == [INTERRUPTED_EXIT_CODE] * 2, (
        outputs[0][-2000:] + outputs[1][-2000:]
    )
    steps = [
        int(m.group(1)) for out in outputs for m in [re.search(r"saving step (\d+) before exit", out)] if m
    ]
    assert len(steps) == 2, steps
    assert steps[0] == steps[1], steps
    assert "stop requested (SIGTERM to another process)" in outputs[0]
    assert "stop requested (SIGTERM)" in outputs[1]
    assert (output / str(steps[0]) / "_CHECKPOINT_METADATA").exists()
