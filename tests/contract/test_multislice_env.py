"""The operator-runtime contract across slices: every pod of a multislice JobSet, its environment
resolved as the kubelet resolves it (downward API annotations, then $(VAR) expansion from earlier
entries), gives gemma_runtime a distinct jax process id and the hostnames of its own slice."""

from __future__ import annotations

from typing import Any

import pytest

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.training import render_workload
from gemma_runtime.config import ConfigError, distributed
from tests.api_cases import merge, sample
from tests.kubelet import resolve_env


def _jobset(name: str, **spec: Any) -> dict[str, Any]:
    doc = merge(sample(name), {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}, "spec": spec})
    (jobset,) = [c for c in render_workload(doc, parse(doc), Settings(), 0) if c["kind"] == "JobSet"]
    return jobset


def _pods(jobset: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(hostname, resolved env) of every pod JobSet and the Job controller would create."""
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    entries = job["template"]["spec"]["containers"][0]["env"]
    pods = []
    for slice_id in range(replicated["replicas"]):
        for index in range(job["completions"]):
            annotations = {
                "jobset.sigs.k8s.io/job-index": str(slice_id),
                "batch.kubernetes.io/job-completion-index": str(index),
            }
            hostname = f"{jobset['metadata']['name']}-{replicated['name']}-{slice_id}-{index}"
            pods.append((hostname, resolve_env(entries, {"annotations": annotations})))
    return pods


@pytest.mark.parametrize("slices", [2, 3])
def test_every_pod_of_every_slice_has_its_own_process_id_and_its_slices_hostnames(slices: int) -> None:
    jobset = _jobset("training-multislice-v5p", accelerator={"numSlices": slices})
    subdomain = jobset["spec"]["network"]["subdomain"]
    pods = _pods(jobset)
    hosts = len(pods) // slices
    assert hosts == 2
    ids = []
    for hostname, env in pods:
        cluster = distributed(env)
        assert cluster is not None
        assert cluster.processes == slices * hosts
        assert cluster.coordinator == f"{pods[0][0]}.{subdomain}.ns.svc:8476"
        ids.append(cluster.process_id)
        own_slice = hostname.rsplit("-", 1)[0]
        assert env["TPU_WORKER_HOSTNAMES"].split(",") == [
            f"{own_slice}-{i}.{subdomain}" for i in range(hosts)
        ]
        assert f"{hostname}.{subdomain}" in env["TPU_WORKER_HOSTNAMES"].split(",")
        assert env["MEGASCALE_NUM_SLICES"] == str(slices)
    assert ids == list(range(slices * hosts))  # slice-major: slice 0's hosts first


def test_a_pod_without_its_slice_id_is_refused_rather_than_claiming_process_0() -> None:
    (_, env), *_ = _pods(_jobset("training-multislice-v5p"))
    del env["MEGASCALE_SLICE_ID"]
    with pytest.raises(ConfigError, match="neither JAX_PROCESS_ID nor MEGASCALE_SLICE_ID"):
        distributed(env)
