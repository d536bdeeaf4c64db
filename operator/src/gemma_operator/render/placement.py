"""Where a pod runs and what it asks for, from the accelerator table: node selectors, tolerations and
resource requests of a GKE TPU slice host, a GPU machine, or a CPU node."""

from __future__ import annotations

import dataclasses
from typing import Any

from gemma_operator.api.common import AcceleratorSpec, PodOverrides
from gemma_operator.api.serving import ResolvedAccelerator
from gemma_operator.config import Settings
from gemma_runtime import accelerators as acc


@dataclasses.dataclass(frozen=True)
class Placement:
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    resources: dict[str, dict[str, Any]]
    resolved: ResolvedAccelerator

    @property
    def hosts(self) -> int:
        return self.resolved.hosts


def resolve(accelerator: AcceleratorSpec) -> ResolvedAccelerator:
    tpu = accelerator.slice()
    if tpu is not None:
        host = "host" if tpu.hosts == 1 else "hosts"
        return ResolvedAccelerator(
            summary=f"{accelerator.type} {tpu.topology} ({tpu.hosts} {host} x {tpu.chips_per_host} chips)",
            chips=tpu.chips,
            hosts=tpu.hosts,
            chips_per_host=tpu.chips_per_host,
            machine_type=tpu.machine_type,
        )
    if accelerator.type in acc.GPUS and accelerator.count is not None:
        return ResolvedAccelerator(
            summary=f"{accelerator.count}x {accelerator.type}",
            chips=accelerator.count,
            hosts=1,
            chips_per_host=accelerator.count,
            machine_type=acc.gpu_machine(accelerator.type, accelerator.count),
        )
    hosts = getattr(accelerator, "hosts", None) or 1  # GemmaTraining's CPU hosts
    summary = "cpu" if hosts == 1 else f"cpu ({hosts} hosts)"
    return ResolvedAccelerator(summary=summary, chips=0, hosts=hosts, chips_per_host=0, machine_type=None)


def place(accelerator: AcceleratorSpec, pod: PodOverrides, settings: Settings) -> Placement:
    resolved = resolve(accelerator)
    selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    tpu = accelerator.slice()
    if tpu is not None:
        selector[acc.TPU_ACCELERATOR_LABEL] = acc.TPUS[accelerator.type].node_label
        selector[acc.TPU_TOPOLOGY_LABEL] = tpu.topology
        selector[acc.INSTANCE_TYPE_LABEL] = tpu.machine_type
        tolerations.append({"key": acc.TPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
        requests[acc.TPU_RESOURCE] = limits[acc.TPU_RESOURCE] = tpu.chips_per_host
    elif accelerator.type in acc.GPUS:
        selector[acc.GPU_ACCELERATOR_LABEL] = accelerator.type
        tolerations.append({"key": acc.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
        requests[acc.GPU_RESOURCE] = limits[acc.GPU_RESOURCE] = accelerator.count
    else:
        requests.update(cpu=settings.cpu_request, memory=settings.memory_request)
    if accelerator.spot:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append(
            {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        )
    if accelerator.reservation:
        selector["cloud.google.com/reservation-name"] = accelerator.reservation
        selector["cloud.google.com/reservation-affinity"] = "specific"
    selector.update(pod.node_selector)
    tolerations += [t.to_api() for t in pod.tolerations]
    if pod.resources is not None:
        requests.update(pod.resources.requests)
        limits.update(pod.resources.limits)
    resources = {"requests": requests} | ({"limits": limits} if limits else {})
    return Placement(selector, tolerations, resources, resolved)
