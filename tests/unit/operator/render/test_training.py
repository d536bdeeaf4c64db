"""Rendering a GemmaTraining: one Indexed Job per attempt with one pod per host, the jax.distributed
environment set by the operator, the pod failure policy that names disruptions, Kueue and TTL
settings, a JobSet with MEGASCALE_* variables for several slices, checkpoints to a bucket mounted so
Orbax can commit on it, and a termination grace period long enough for the SIGTERM checkpoint."""

from __future__ import annotations

import json
from typing import Any

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.plan import training_grace_seconds
from gemma_operator.render.training import render_workload
from tests.api_cases import merge, sample


def _render(doc: dict[str, Any], attempt: int = 0) -> dict[str, dict[str, Any]]:
    doc = merge(doc, {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}})
    return {c["kind"]: c for c in render_workload(doc, parse(doc), Settings(), attempt)}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_indexed_job_per_attempt_with_one_pod_per_host() -> None:
    children = _render(sample("training-gemma-2b-v5e"), attempt=3)
    job = children["Job"]
    assert job["metadata"]["name"] == "gemma-2b-finetune-a3"
    assert job["metadata"]["labels"]["gemma.ai/attempt"] == "3"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "tpu-queue"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed",
        4,
        4,
        0,
    )
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[1]["onExitCodes"]["values"] == [42]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == children["Service"]["metadata"]["name"] == "gemma-2b-finetune"
    assert children["Service"]["spec"]["clusterIP"] == "None"
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": 4}


def test_distributed_environment_is_set_by_the_operator() -> None:
    env = _env(_render(sample("training-gemma-2b-v5e"))["Job"]["spec"]["template"]["spec"]["containers"][0])
    assert env["JAX_COORDINATOR_ADDRESS"] == "gemma-2b-finetune-a0-0.gemma-2b-finetune.team.svc:8476"
    assert env["JAX_PROCESS_COUNT"] == "4"
    index = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["JAX_PROCESS_ID"] == env["TPU_WORKER_ID"] == index
    assert env["TPU_WORKER_HOSTNAMES"].split(",") == [
        f"gemma-2b-finetune-a0-{i}.gemma-2b-finetune" for i in range(4)
    ]


def test_an_ambiguous_2x4_selects_the_machine_type_of_its_hosts() -> None:
    # The 8-chip single-host and the 4-chip multi-host v5e pools carry the same accelerator and topology
    # labels: only the instance type keeps two 4-chip pods off an 8-chip machine and the other way round.
    selectors = {}
    for per_host in (8, 4):
        doc = merge(
            sample("training-gemma-2b-v5e"),
            {"spec": {"accelerator": {"topology": "2x4", "chipsPerHost": per_host}}},
        )
        pod = _render(doc)["Job"]["spec"]["template"]["spec"]
        selectors[per_host] = pod["nodeSelector"]
        assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == per_host
    assert selectors[8]["node.kubernetes.io/instance-type"] == "ct5lp-hightpu-8t"
    assert selectors[4]["node.kubernetes.io/instance-type"] == "ct5lp-hightpu-4t"
    assert (
        selectors[8]["cloud.google.com/gke-tpu-topology"] == selectors[4]["cloud.google.com/gke-tpu-topology"]
    )


def test_every_training_pod_names_its_jax_platform() -> None:
    tpu = _render(sample("training-gemma-2b-v5e"))["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert _env(tpu)["JAX_PLATFORMS"] == "tpu"
    jobset = _render(sample("training-multislice-v5p"))["JobSet"]["spec"]["replicatedJobs"][0]
    container = jobset["template"]["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["JAX_PLATFORMS"] == "tpu"


def test_ttl_and_suspend_reach_the_job() -> None:
    job = _render(
        merge(sample("training-tiny-cpu"), {"spec": {"suspend": True, "ttlSecondsAfterFinished": 60}})
    )["Job"]
    assert job["spec"]["suspend"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] == 60


def test_several_slices_render_a_jobset_with_megascale_variables() -> None:
    children = _render(sample("training-multislice-v5p"))
    jobset = children["JobSet"]
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert (
        jobset["metadata"]["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"]
        == "cloud.google.com/gke-nodepool"
    )
    (replicated,) = jobset["spec"]["replicatedJobs"]
    assert replicated["replicas"] == 2
    assert replicated["template"]["spec"]["completions"] == 2
    assert replicated["template"]["metadata"]["labels"]["gemma.ai/attempt"] == "0"
    env = _env(replicated["template"]["spec"]["template"]["spec"]["containers"][0])
    assert env["MEGASCALE_NUM_SLICES"] == "2"
    assert env["JAX_PROCESS_COUNT"] == "4"
    assert env["GEMMA_HOSTS_PER_SLICE"] == "2"
    assert env["MEGASCALE_SLICE_ID"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['jobset.sigs.k8s.io/job-index']"}
    }
    assert env["TPU_WORKER_ID"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert (
        env["MEGASCALE_COORDINATOR_ADDRESS"]
        == "gemma2-9b-multislice-a0-slice-0-0.gemma2-9b-multislice.team.svc"
    )


def test_a_slice_pod_names_its_own_slice_and_no_per_job_process_id() -> None:
    """The template is shared by every slice: the completion index repeats in each, so it cannot be the
    process id, and the slice's hostnames come from the pod's own slice id (kubelet $(VAR) expansion),
    never a placeholder left in the text."""
    jobset = _render(sample("training-multislice-v5p"))["JobSet"]
    assert "{slice}" not in json.dumps(jobset)
    (replicated,) = jobset["spec"]["replicatedJobs"]
    entries = replicated["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in entries]
    assert "JAX_PROCESS_ID" not in names
    assert len(names) == len(set(names))
    hostnames = _env({"env": entries})["TPU_WORKER_HOSTNAMES"].split(",")
    assert hostnames == [
        f"gemma2-9b-multislice-a0-slice-$(MEGASCALE_SLICE_ID)-{i}.gemma2-9b-multislice" for i in range(2)
    ]
    # The kubelet expands $(VAR) only from variables defined earlier in the list.
    assert names.index("MEGASCALE_SLICE_ID") < names.index("TPU_WORKER_HOSTNAMES")


def test_a_long_name_keeps_every_jobset_pod_name_a_dns_label() -> None:
    """JobSet's webhook refuses a JobSet whose last pod, <jobset>-slice-<slice>-<index>-<5 random>,
    would pass 63 characters; a long training name is shortened with a hash instead."""
    name = "gemma2-9b-pretraining-on-two-v5p-slices-with-a-long-name"
    jobset = _render(merge(sample("training-multislice-v5p"), {"metadata": {"name": name}}))["JobSet"]
    js = jobset["metadata"]["name"]
    assert js.startswith("gemma2-9b-pretraining-")
    assert js.endswith("-a0")
    assert len(f"{js}-slice-1-1-abcde") <= 63
    (replicated,) = jobset["spec"]["replicatedJobs"]
    env = _env(replicated["template"]["spec"]["template"]["spec"]["containers"][0])
    assert env["MEGASCALE_COORDINATOR_ADDRESS"].startswith(f"{js}-slice-0-0.")


def test_checkpoint_output_is_mounted_writable() -> None:
    children = _render(sample("training-gemma-2b-v5e"))
    assert (
        "directory: /gemma/output/gcs-my-checkpoints/gemma-2b-finetune"
        in children["ConfigMap"]["data"]["runtime.yaml"]
    )
    volumes = {v["name"]: v for v in children["Job"]["spec"]["template"]["spec"]["volumes"]}
    assert "readOnly" not in volumes["out-gcs-my-checkpoints"]["csi"]


def test_checkpoints_on_a_bucket_may_rename_folders_and_sources_stay_plain() -> None:
    """Orbax commits by renaming the checkpoint's folder: gcsfuse allows that on a flat bucket only with
    rename-dir-limit (tests/cluster/sources/test_gcsfuse_checkpoints.py mounts these options for real)."""
    children = _render(sample("training-gemma-2b-v5e"))
    volumes = {v["name"]: v for v in children["Job"]["spec"]["template"]["spec"]["volumes"]}
    output = volumes["out-gcs-my-checkpoints"]["csi"]["volumeAttributes"]
    assert output == {"bucketName": "my-checkpoints", "mountOptions": "implicit-dirs,rename-dir-limit=200000"}
    for source in ("src-gcs-my-models", "src-gcs-my-data"):
        assert volumes[source]["csi"]["volumeAttributes"]["mountOptions"] == "implicit-dirs"


def _grace(doc: dict[str, Any]) -> int:
    children = _render(doc)
    workload = children.get("Job") or children["JobSet"]
    if workload["kind"] == "JobSet":
        workload = workload["spec"]["replicatedJobs"][0]["template"]
    grace: int = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == training_grace_seconds(parse(merge(doc, {"metadata": {"uid": PLACEHOLDER_UID}})).spec)
    return grace


def test_the_grace_period_lets_a_sigterm_checkpoint_of_the_model_finish() -> None:
    # Gemma 2 9B with AdamW on two v5p 2x2x2 slices: 111 GB of state, 55 GB per host of one replica.
    assert _grace(sample("training-multislice-v5p")) == 585
    assert _grace(sample("training-gemma-2b-v5e")) == 106  # 2.5B over four hosts: 7.5 GB each
    assert _grace(sample("training-tiny-cpu")) == 60  # the floor
    lora = merge(sample("training-gemma-2b-v5e"), {"spec": {"training": {"lora": {"rank": 8}}}})
    assert _grace(lora) == 60  # only the adapters and their moments are saved
