"""GemmaTraining -> ConfigMap (the runtime's TrainConfig), a headless Service, and an Indexed Job with one
pod per host of the slice (or, for several slices, a JobSet), wired for jax.distributed by the operator
itself: coordinator address (pod 0 through the headless Service), process count, process id from the
completion index, TPU_WORKER_ID and TPU_WORKER_HOSTNAMES; MEGASCALE_* across slices."""

from __future__ import annotations

from typing import Any

import yaml

from gemma_operator.api.training import RETRY_EXIT_CODE, GemmaTrainingSpec
from gemma_operator.api.v1alpha1 import GemmaTraining
from gemma_operator.config import Settings
from gemma_operator.render import naming
from gemma_operator.render.env import render
from gemma_operator.render.placement import place
from gemma_operator.render.plan import mesh_document, training_grace_seconds
from gemma_operator.render.pods import fetcher, runtime_pod_spec
from gemma_operator.render.serving import config_hash
from gemma_operator.render.sources import TERMINATION_LOG, Mounts, compilation_cache, resolve
from gemma_runtime.accelerators import jax_platform

COORDINATOR_PORT = 8476  # the TPU process port Google's tooling uses
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
ATTEMPT_LABEL = f"{naming.GROUP}/attempt"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"


def job_name(name: str, attempt: int, *, slices: int = 1, hosts: int = 1) -> str:
    """One Job (or JobSet) per attempt: a restart creates the next one instead of waiting for the old to
    go. Pod names stay DNS labels (63): a Job's pods add "-<index>-<5 random>"; a JobSet's add
    "-slice-<slice>-<index>-<5 random>", which JobSet's webhook checks for the last slice and index."""
    if slices == 1:
        return naming.child_name(name, f"a{attempt}", limit=52)
    return naming.child_name(name, f"a{attempt}", limit=63 - len(f"-slice-{slices - 1}-{hosts - 1}-abcde"))


def train_config(
    name: str, spec: GemmaTrainingSpec, mounts: Mounts, image: str, settings: Settings
) -> dict[str, Any]:
    """The runtime's TrainConfig document (checked against gemma_runtime.config by a contract test)."""
    model, secret = spec.model, spec.model.checkpoint.secret_ref if spec.model.checkpoint else None
    source: dict[str, Any] = {"variant": str(model.variant), "instruction_tuned": model.instruction_tuned}
    fetch = fetcher(image, settings, model.cache)
    if model.checkpoint is not None:
        source["checkpoint"] = resolve(model.checkpoint.uri, "checkpoint", mounts, fetch, secret=secret)
        if model.checkpoint.format is not None:
            source["format"] = str(model.checkpoint.format)
    if model.tokenizer is not None:
        source["tokenizer"] = resolve(model.tokenizer.uri, "tokenizer", mounts, fetch, secret=secret)
    data_path = resolve(spec.dataset.uri, "dataset", mounts, fetch)
    checkpoints: dict[str, Any] = {
        "interval_steps": spec.checkpoints.interval_steps,
        "keep": spec.checkpoints.keep,
        "resume": spec.checkpoints.resume,
    }
    if spec.checkpoints.uri:
        checkpoints["directory"] = resolve(spec.checkpoints.uri, "output", mounts, fetch, writable=True)
    hp = spec.training
    training: dict[str, Any] = {
        "steps": hp.steps,
        "global_batch_size": hp.global_batch_size,
        "sequence_length": hp.sequence_length,
        "learning_rate": hp.learning_rate,
        "schedule": str(hp.schedule),
        "warmup_steps": hp.warmup_steps,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        "precision": hp.precision,
        "remat": hp.remat,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "seed": hp.seed,
    }
    if hp.lora is not None:
        training["lora"] = {"rank": hp.lora.rank, "alpha": hp.lora.alpha}
    return {
        "kind": "train",
        "name": name,
        "model": source,
        "data": {
            "path": data_path,
            "format": str(spec.dataset.format),
            "text_field": spec.dataset.text_field,
        },
        "training": training,
        "mesh": mesh_document(
            spec.parallelism.data,
            spec.parallelism.tensor,
            fsdp=spec.parallelism.fsdp,
            expert=spec.parallelism.expert,
        ),
        "checkpoints": checkpoints,
        "num_slices": spec.accelerator.num_slices,
        "compilation_cache": compilation_cache(mounts, model.cache),
        "port": settings.runtime_port,
    }


def _env(name: str, namespace: str, job: str, service: str, hosts: int) -> list[dict[str, Any]]:
    index = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
    hostnames = ",".join(f"{job}-{i}.{service}" for i in range(hosts))
    return [
        {"name": "JAX_COORDINATOR_ADDRESS", "value": f"{job}-0.{service}.{namespace}.svc:{COORDINATOR_PORT}"},
        {"name": "JAX_PROCESS_COUNT", "value": str(hosts)},
        {"name": "JAX_PROCESS_ID", **index},
        {"name": "TPU_WORKER_ID", **index},
        {"name": "TPU_WORKER_HOSTNAMES", "value": hostnames},
        {"name": "GEMMA_TRAINING", "value": name},
    ]


def render_training(
    obj: dict[str, Any], training: GemmaTraining, settings: Settings, attempt: int
) -> list[dict[str, Any]]:
    """The children of a GemmaTraining for one attempt (a single slice; see render_jobset for several)."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = training.spec
    image = spec.image or settings.runtime_image
    labels = naming.training_labels(name)
    common = {"namespace": namespace, "labels": labels, "owner": naming.owner_reference(obj)}
    mounts = Mounts()
    data = {
        "runtime.yaml": yaml.safe_dump(train_config(name, spec, mounts, image, settings), sort_keys=False)
    }
    config_name = naming.child_name(name, "config", 253)
    placement = place(spec.accelerator, spec.pod, settings)
    hosts = placement.hosts
    service = naming.child_name(name)
    job = job_name(name, attempt, slices=spec.accelerator.num_slices, hosts=hosts)
    env = _env(name, namespace, job, service, hosts)
    # Named for accelerators too: a pod whose TPU or GPU is missing fails instead of training on the CPU.
    env.append({"name": "JAX_PLATFORMS", "value": jax_platform(spec.accelerator.type)})
    pod_spec = runtime_pod_spec(
        image=image,
        # The final /progress document outlives the process as the termination message.
        args=["train", "--config", naming.CONFIG_FILE, "--message-file", TERMINATION_LOG],
        config_map=config_name,
        placement=placement,
        mounts=mounts,
        overrides=spec.pod,
        settings=settings,
        env=env,
        ports=[
            {"name": "http", "containerPort": settings.runtime_port, "protocol": "TCP"},
            {"name": "coordinator", "containerPort": COORDINATOR_PORT, "protocol": "TCP"},
        ],
        extra={"restartPolicy": "Never", "subdomain": service},
        # SIGTERM makes the runtime save the current step: the kubelet must wait for that save.
        grace_seconds=training_grace_seconds(spec),
    )
    job_labels = {**labels, ATTEMPT_LABEL: str(attempt)}
    if spec.queue_name:
        job_labels[QUEUE_LABEL] = spec.queue_name
    return [
        render("configmap.yaml.j2", name=config_name, data=data, **common),
        render(
            "headless-service.yaml.j2",
            name=service,
            selector=naming.training_selector(name),
            coordinator_port=COORDINATOR_PORT,
            http_port=settings.runtime_port,
            **common,
        ),
        render(
            "job.yaml.j2",
            name=job,
            namespace=namespace,
            owner=naming.owner_reference(obj),
            job_labels=job_labels,
            job_annotations={naming.CONFIG_HASH: config_hash(data)},
            hosts=hosts,
            retry_exit_code=RETRY_EXIT_CODE,
            suspend=spec.suspend,
            ttl=spec.ttl_seconds_after_finished,
            pod_labels={**spec.pod.labels, **job_labels},
            pod_annotations={
                **spec.pod.annotations,
                **mounts.annotations,
                naming.CONFIG_HASH: config_hash(data),
            },
            pod_spec=pod_spec,
        ),
    ]


SLICE_ANNOTATION = "jobset.sigs.k8s.io/job-index"
EXCLUSIVE_TOPOLOGY = "alpha.jobset.sigs.k8s.io/exclusive-topology"


# What a slice's pod gets in place of the single-slice values, which assume one Job's completion index.
_PER_JOB = {"JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_COUNT", "JAX_PROCESS_ID", "TPU_WORKER_HOSTNAMES"}


def _slice_env(
    env: list[dict[str, Any]], jobset: str, service: str, namespace: str, *, hosts: int, slices: int
) -> list[dict[str, Any]]:
    """The distributed environment of a pod in any slice of a JobSet. Every slice shares one pod
    template, so what differs per slice comes from the pod itself: the slice id from the JobSet's
    job-index annotation; the slice's own hostnames by the kubelet's $(VAR) expansion of that id (JobSet
    names pods ``<jobset>-slice-<slice>-<index>``); and no JAX_PROCESS_ID, because the completion index
    repeats in every slice: the runtime takes MEGASCALE_SLICE_ID x GEMMA_HOSTS_PER_SLICE + TPU_WORKER_ID
    (gemma_runtime.config.distributed)."""
    coordinator = f"{jobset}-slice-0-0.{service}.{namespace}.svc"
    slice_id = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{SLICE_ANNOTATION}']"}}}
    hostnames = ",".join(f"{jobset}-slice-$(MEGASCALE_SLICE_ID)-{i}.{service}" for i in range(hosts))
    return [
        # First: the kubelet expands $(VAR) only from entries defined before the one that uses it.
        {"name": "MEGASCALE_SLICE_ID", **slice_id},
        {"name": "MEGASCALE_NUM_SLICES", "value": str(slices)},
        {"name": "MEGASCALE_COORDINATOR_ADDRESS", "value": coordinator},
        {"name": "GEMMA_HOSTS_PER_SLICE", "value": str(hosts)},
        {"name": "JAX_COORDINATOR_ADDRESS", "value": f"{coordinator}:{COORDINATOR_PORT}"},
        {"name": "JAX_PROCESS_COUNT", "value": str(hosts * slices)},
        {"name": "TPU_WORKER_HOSTNAMES", "value": hostnames},
        *(e for e in env if e["name"] not in _PER_JOB),
    ]


def render_jobset(
    obj: dict[str, Any], training: GemmaTraining, settings: Settings, attempt: int
) -> list[dict[str, Any]]:
    """Several slices: a JobSet with one Indexed Job per slice, each slice on its own node pool, and the
    MEGASCALE_* variables; the runtime's process id is slice id x hosts per slice + worker id."""
    children = render_training(obj, training, settings, attempt)
    job = children[2]
    slices = training.spec.accelerator.num_slices
    hosts = job["spec"]["completions"]
    name = job["metadata"]["name"]
    service = children[1]["metadata"]["name"]
    namespace = obj["metadata"]["namespace"]
    pod_spec = job["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    container["env"] = _slice_env(container["env"], name, service, namespace, hosts=hosts, slices=slices)
    pod_spec.pop("subdomain", None)  # JobSet sets the subdomain from spec.network
    jobset = {
        "apiVersion": JOBSET_API,
        "kind": "JobSet",
        "metadata": {
            **job["metadata"],
            "annotations": {
                **job["metadata"]["annotations"],
                EXCLUSIVE_TOPOLOGY: "cloud.google.com/gke-nodepool",
            },
        },
        "spec": {
            "suspend": job["spec"]["suspend"],
            "failurePolicy": {"maxRestarts": 0},  # the operator restarts, counting disruptions apart
            "network": {"enableDNSHostnames": True, "subdomain": service},
            "replicatedJobs": [
                {
                    "name": "slice",
                    "replicas": slices,
                    # The Job labels, so each slice's Job is found (and watched) by training and attempt.
                    "template": {
                        "metadata": {"labels": dict(job["metadata"]["labels"])},
                        "spec": {
                            k: v
                            for k, v in job["spec"].items()
                            if k not in ("suspend", "ttlSecondsAfterFinished")
                        },
                    },
                }
            ],
            **(
                {"ttlSecondsAfterFinished": job["spec"]["ttlSecondsAfterFinished"]}
                if "ttlSecondsAfterFinished" in job["spec"]
                else {}
            ),
        },
    }
    return [children[0], children[1], jobset]


def render_workload(
    obj: dict[str, Any], training: GemmaTraining, settings: Settings, attempt: int
) -> list[dict[str, Any]]:
    if training.spec.accelerator.num_slices > 1:
        return render_jobset(obj, training, settings, attempt)
    return render_training(obj, training, settings, attempt)
