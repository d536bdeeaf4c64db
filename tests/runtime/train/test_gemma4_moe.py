"""`gemma-runtime train` on the tiny Gemma 4 mixture-of-experts preset (its packaged Gemma 4 tokenizer,
the shipped sample text): the loss falls, and a run stopped by SIGTERM (as a preemption stops it: it saves
the step it is at) and started again reaches step 20 with the same losses and the same weights as a run
that never stopped; with its experts split over an ``expert`` axis (8 devices, data 2 x expert 2 x tensor
2) it takes one device's first step and follows its loss curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gemma_runtime.checkpoint import store
from gemma_runtime.config import INTERRUPTED_EXIT_CODE
from tests.runtime.train import runner

ARGS = [
    "--variant",
    "tiny-gemma4-moe",
    "--checkpoint-every",
    "10",
    "--seq-len",
    "64",
    "--batch-size",
    "8",
    "--learning-rate",
    "0.003",
    "--warmup-steps",
    "5",
    "--log-every",
    "1",
]


def _weights(directory: Path) -> dict[str, np.ndarray]:
    return {name: array for name, array, _ in store.tensors(directory / "model")}


def test_the_moe_preset_learns_and_resumes_exactly(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    done = runner.train(
        [*ARGS, "--steps", "20", "--output", str(straight), "--metrics-file", str(tmp_path / "a")]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    losses = runner.losses(tmp_path / "a")
    assert sorted(losses) == list(range(1, 21))
    first, last = np.mean([losses[s] for s in range(1, 4)]), np.mean([losses[s] for s in range(18, 21)])
    assert last < first - 0.4, losses  # 7.43 to 6.88 here (ln 1024 = 6.9: still near random, but falling)

    # Stopped as a preemption stops it (SIGTERM: it saves the step it is at), then started again.
    proc = runner.start(
        [*ARGS, "--steps", "20", "--output", str(stopped), "--metrics-file", str(tmp_path / "b")]
    )
    out = runner.sigterm_after(proc, tmp_path / "b", 8)
    assert proc.returncode == INTERRUPTED_EXIT_CODE, out[-3000:]
    saved = max(runner.losses(tmp_path / "b"))
    assert 8 <= saved < 20, "the run finished before the stop: nothing was tested"
    rest = runner.train(
        [*ARGS, "--steps", "20", "--output", str(stopped), "--metrics-file", str(tmp_path / "c")]
    )
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert f"at step {saved} (data epoch" in rest.stderr
    resumed = runner.losses(tmp_path / "c")
    assert sorted(resumed) == list(range(saved + 1, 21))
    assert {s: losses[s] for s in resumed} == resumed
    one, two = _weights(straight), _weights(stopped)
    assert one.keys() == two.keys()
    assert any(".moe." in name for name in one), sorted(one)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_expert_parallel_training_follows_one_devices_curve(tmp_path: Path) -> None:
    args = [*ARGS, "--steps", "6", "--warmup-steps", "2"]
    alone = runner.train([*args, "--metrics-file", str(tmp_path / "one")])
    assert alone.returncode == 0, alone.stderr[-3000:]
    split = runner.train([*args, "--mesh", "2,1,2,2", "--metrics-file", str(tmp_path / "ep")], devices=8)
    assert split.returncode == 0, split.stderr[-3000:]
    assert "mesh {'data': 2, 'fsdp': 1, 'expert': 2, 'tensor': 2}" in split.stderr
    one, ep = (
        [json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("one", "ep")
    )
    assert [r["step"] for r in ep] == list(range(1, 7))
    # The first step is the same computation: its loss and gradient norm agree to float32 rounding.
    np.testing.assert_allclose(
        [ep[0]["loss"], ep[0]["grad_norm"]], [one[0]["loss"], one[0]["grad_norm"]], rtol=1e-5
    )
    # Later steps drift by rounding that a router's top-k can amplify; tensor parallelism alone drifts as
    # far or further (measured at step 6: --mesh 4,1,2 0.06 % off, 1,4,2 0.18 %; this mesh 0.06 %). The
    # expert-parallel curve stays within 0.1 %.
    np.testing.assert_allclose([r["loss"] for r in ep], [r["loss"] for r in one], rtol=1e-3)
