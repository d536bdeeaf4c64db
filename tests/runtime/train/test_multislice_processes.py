"""The processes of a multislice JobSet join one jax.distributed run: four real `gemma-runtime train`
processes, each with the environment the operator renders for one pod of two v5p 2x2x2 slices, resolved
as the kubelet resolves it (only the coordinator's DNS name becomes a loopback address), start together
and train, each with its own process id. (The mesh spans one simulated CPU device per process: CPU
devices carry no slice index, so the data axis is not split over slices here.)"""

from __future__ import annotations

import re
from pathlib import Path

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.training import render_workload
from tests.api_cases import merge, sample
from tests.kubelet import resolve_env
from tests.runtime.serve.helpers import free_port
from tests.runtime.train import runner


def _pod_envs() -> list[dict[str, str]]:
    doc = merge(sample("training-multislice-v5p"), {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}})
    (jobset,) = [c for c in render_workload(doc, parse(doc), Settings(), 0) if c["kind"] == "JobSet"]
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    entries = job["template"]["spec"]["containers"][0]["env"]
    return [
        resolve_env(
            entries,
            {
                "annotations": {
                    "jobset.sigs.k8s.io/job-index": str(s),
                    "batch.kubernetes.io/job-completion-index": str(i),
                }
            },
        )
        for s in range(replicated["replicas"])
        for i in range(job["completions"])
    ]


def _distributed(env: dict[str, str]) -> dict[str, str]:
    # JAX_PLATFORMS=tpu stays behind: the CPU stands in for the pods' TPUs here.
    return {
        k: v
        for k, v in env.items()
        if k.startswith(("JAX_", "MEGASCALE_", "TPU_", "GEMMA_")) and k != "JAX_PLATFORMS"
    }


def test_every_pod_of_two_slices_joins_one_distributed_run(tmp_path: Path) -> None:
    envs = _pod_envs()
    assert len(envs) == 4
    coordinator = f"127.0.0.1:{free_port()}"
    cfg = runner.config(tmp_path, "slices", training={"steps": 2})
    procs = [
        runner.start(
            ["--config", str(cfg), "--log-every", "1"],
            devices=1,
            **{**_distributed(env), "JAX_COORDINATOR_ADDRESS": coordinator},
        )
        for env in envs
    ]
    outputs = runner.outputs(procs)
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    ids = [
        int(m.group(1)) for out in outputs for m in [re.search(r"process (\d+) of 4, coordinator", out)] if m
    ]
    assert ids == [0, 1, 2, 3]  # slice 0's two hosts, then slice 1's
    assert all("step 2/2" in out for out in outputs)
