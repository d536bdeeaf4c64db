"""GemmaServer -> ConfigMap (the runtime's ServeConfig), Deployment, Service, PodDisruptionBudget and,
with autoscaling, a HorizontalPodAutoscaler."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from gemma_operator.api.common import ModelVariant
from gemma_operator.api.serving import GemmaServerSpec
from gemma_operator.api.v1alpha1 import API_VERSION, GemmaServer
from gemma_operator.config import Settings
from gemma_operator.render import naming
from gemma_operator.render.env import render
from gemma_operator.render.monitoring import autoscaling_metric
from gemma_operator.render.placement import Placement, place
from gemma_operator.render.plan import mesh_document, server_plan
from gemma_operator.render.pods import fetcher, runtime_pod_spec
from gemma_operator.render.sources import TERMINATION_LOG, Mounts, compilation_cache, resolve
from gemma_runtime import metric_names
from gemma_runtime.accelerators import jax_platform
from gemma_runtime.memory import ServingPlan

# The runtime exports these (gemma_runtime.metric_names is the contract both packages read).
QUEUE_METRIC = metric_names.REQUESTS_WAITING
OCCUPANCY_METRIC = metric_names.BATCH_OCCUPANCY_PERCENT


def serve_config(
    name: str, spec: GemmaServerSpec, mounts: Mounts, image: str, settings: Settings, *, plan: ServingPlan
) -> dict[str, Any]:
    """The runtime's ServeConfig document (the contract checked against gemma_runtime.config)."""
    model, acc = spec.model, spec.accelerator
    checkpoint = tokenizer = None
    secret = model.checkpoint.secret_ref if model.checkpoint else None
    fetch = fetcher(image, settings, model.cache)
    if model.checkpoint is not None:
        checkpoint = resolve(model.checkpoint.uri, "checkpoint", mounts, fetch, secret=secret)
    if model.tokenizer is not None:
        tokenizer = resolve(model.tokenizer.uri, "tokenizer", mounts, fetch, secret=secret)
    source: dict[str, Any] = {"variant": str(model.variant), "instruction_tuned": model.instruction_tuned}
    if checkpoint:
        source["checkpoint"] = checkpoint
    if model.checkpoint is not None and model.checkpoint.format is not None:
        source["format"] = "orbax" if model.checkpoint.format == "orbax" else "safetensors"
    if tokenizer:
        source["tokenizer"] = tokenizer
    return {
        "kind": "serve",
        "model": source,
        "served_model_name": name,
        "max_batch_size": plan.slots,
        "max_sequence_length": spec.serving.max_sequence_length,
        "max_prefill_length": spec.serving.prefill_length,
        "max_queued_requests": spec.serving.max_queued_requests,
        "quantization": str(spec.quantization),
        "dtype": "auto",
        "sampling": {
            "temperature": spec.sampling.temperature,
            "top_k": spec.sampling.top_k,
            "top_p": spec.sampling.top_p,
            "max_tokens": spec.sampling.max_tokens,
        },
        "accelerator": {
            k: v
            for k, v in {
                "type": acc.type,
                "topology": acc.topology,
                "count": acc.count,
                "chips_per_host": acc.chips_per_host,
            }.items()
            if v is not None
        },
        "mesh": mesh_document(plan.mesh.data, plan.mesh.tensor, expert=plan.mesh.expert),
        "compilation_cache": compilation_cache(mounts, model.cache),
        "host": "0.0.0.0",
        "port": settings.runtime_port,
    }


def config_hash(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def replicas(spec: GemmaServerSpec) -> int:
    if spec.suspend:
        return 0
    if spec.autoscaling is not None:
        return min(max(spec.replicas, spec.autoscaling.min_replicas), spec.autoscaling.max_replicas)
    return spec.replicas


def endpoint(name: str, namespace: str, settings: Settings) -> str:
    return f"http://{naming.child_name(name)}.{namespace}.svc:{settings.runtime_port}/v1"


def _probes(spec: GemmaServerSpec) -> dict[str, Any]:
    # Weights of a large model can take many minutes to load: the startup probe allows 30 minutes.
    startup_failures = 30 if spec.model.variant == ModelVariant.TINY else 180
    return {
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": startup_failures,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
    }


def render_server(obj: dict[str, Any], server: GemmaServer, settings: Settings) -> list[dict[str, Any]]:
    """Every child of a GemmaServer, as plain dicts ready for server-side apply."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = server.spec
    image = spec.image or settings.runtime_image
    labels = naming.server_labels(name)
    selector = naming.server_selector(name)
    common = {"namespace": namespace, "labels": labels, "owner": naming.owner_reference(obj)}
    mounts = Mounts()
    config = serve_config(name, spec, mounts, image, settings, plan=server_plan(spec))
    data = {"runtime.yaml": yaml.safe_dump(config, sort_keys=False)}
    config_name = naming.child_name(name, "config", 253)
    placement: Placement = place(spec.accelerator, spec.pod, settings)
    # Named for accelerators too: a pod whose TPU or GPU is missing fails instead of serving on the CPU.
    env = [{"name": "JAX_PLATFORMS", "value": jax_platform(spec.accelerator.type)}]
    pod_spec = runtime_pod_spec(
        image=image,
        # Why the server could not start (a missing accelerator) outlives it as the termination message.
        args=["serve", "--config", naming.CONFIG_FILE, "--message-file", TERMINATION_LOG],
        config_map=config_name,
        placement=placement,
        mounts=mounts,
        overrides=spec.pod,
        settings=settings,
        env=env,
        ports=[{"name": "http", "containerPort": settings.runtime_port, "protocol": "TCP"}],
        probes=_probes(spec),
    )
    strategy: dict[str, Any] = {"type": spec.update_strategy.type}
    if spec.update_strategy.type == "RollingUpdate":
        strategy["rollingUpdate"] = {
            "maxSurge": spec.update_strategy.max_surge,
            "maxUnavailable": spec.update_strategy.max_unavailable,
        }
    children = [
        render("configmap.yaml.j2", name=config_name, data=data, **common),
        render(
            "deployment.yaml.j2",
            name=naming.child_name(name, limit=253),
            replicas=replicas(spec),
            selector=selector,
            strategy=strategy,
            pod_labels={**spec.pod.labels, **labels},
            pod_annotations={
                **spec.pod.annotations,
                **mounts.annotations,
                naming.CONFIG_HASH: config_hash(data),
            },
            pod_spec=pod_spec,
            **common,
        ),
        render(
            "service.yaml.j2",
            name=naming.child_name(name),
            selector=selector,
            port=settings.runtime_port,
            **common,
        ),
        render("pdb.yaml.j2", name=naming.child_name(name, limit=253), selector=selector, **common),
    ]
    if spec.autoscaling is not None:
        scaling = spec.autoscaling
        by_occupancy = scaling.target_batch_occupancy is not None
        children.append(
            render(
                "hpa.yaml.j2",
                name=naming.child_name(name, limit=253),
                target_api_version=API_VERSION,
                target=name,
                min_replicas=scaling.min_replicas,
                max_replicas=scaling.max_replicas,
                metric=autoscaling_metric(settings, OCCUPANCY_METRIC if by_occupancy else QUEUE_METRIC),
                target_value=str(
                    scaling.target_batch_occupancy if by_occupancy else scaling.target_queue_depth or 8
                ),
                **common,
            )
        )
    return children
