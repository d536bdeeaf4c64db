"""Sharding changes where the work runs, not the numbers: on 8 simulated CPU devices every mesh gives
one device's loss curve, and two real processes joined by jax.distributed train together and agree."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.serve.helpers import free_port
from tests.runtime.train import runner

MESHES = [(8, 1, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2)]


def _curve(tmp_path: Path, mesh: tuple[int, int, int], devices: int) -> dict[int, float]:
    name = "m" + "x".join(map(str, mesh))
    cfg = runner.config(tmp_path, name, mesh=dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)))
    metrics = tmp_path / f"{name}.jsonl"
    done = runner.train(
        ["--config", str(cfg), "--metrics-file", str(metrics), "--log-every", "1"], devices=devices
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"mesh {{'data': {mesh[0]}, 'fsdp': {mesh[1]}, 'tensor': {mesh[2]}}}" in done.stderr
    return runner.losses(metrics)


def test_every_mesh_gives_the_single_device_loss_curve(tmp_path: Path) -> None:
    reference = _curve(tmp_path, (1, 1, 1), devices=1)
    assert sorted(reference) == list(range(1, 21))
    for mesh in MESHES:
        curve = _curve(tmp_path, mesh, devices=8)
        np.testing.assert_allclose(
            [curve[s] for s in range(1, 21)],
            [reference[s] for s in range(1, 21)],
            rtol=2e-4,
            err_msg=str(mesh),
        )


def _logged(output: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in re.findall(r"step (\d+)/\d+: loss ([0-9.]+)", output)}


def test_two_processes_with_jax_distributed_train_together_and_agree(tmp_path: Path) -> None:
    cfg = runner.config(tmp_path, "dist", training={"steps": 8})
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [
        runner.start(
            ["--config", str(cfg), "--log-every", "1"],
            devices=2,
            JAX_COORDINATOR_ADDRESS=coordinator,
            JAX_PROCESS_COUNT="2",
            JAX_PROCESS_ID=str(i),
        )
        for i in range(2)
    ]
    outputs = runner.outputs(procs)
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "process 0 of 2" in outputs[0]
    assert "process 1 of 2" in outputs[1]
    assert "devices: 4 x cpu, mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in outputs[0]
    first, second = _logged(outputs[0]), _logged(outputs[1])
    assert sorted(first) == list(range(1, 9))
    assert first == second  # one computation: both processes see the same global loss
    alone = runner.train(["--config", str(cfg), "--log-every", "1"], devices=4)
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = _logged(alone.stderr)
    assert sorted(single) == sorted(first)
    np.testing.assert_allclose(
        [first[s] for s in sorted(first)], [single[s] for s in sorted(first)], rtol=2e-4
    )


@pytest.mark.parametrize(
    ("mesh", "message"),
    [
        ({"data": 3, "fsdp": -1, "tensor": 1}, "mesh: .*3 does not divide the 8 devices"),
        ({"data": 1, "fsdp": 8, "tensor": 1}, "does not split over the mesh's data x fsdp = 8 devices"),
    ],
)
def test_a_mesh_that_does_not_fit_is_a_clear_error(
    tmp_path: Path, mesh: dict[str, int], message: str
) -> None:
    cfg = runner.config(tmp_path, "bad", mesh=mesh, training={"global_batch_size": 4})
    done = runner.train(["--config", str(cfg)], devices=8)
    assert done.returncode == 1
    assert re.search(message, done.stderr), done.stderr[-2000:]
