"""Fake GKE node pools for the kwok-managed test cluster.

The labels, taints and capacities are GKE's (shared/reference/tpu.md), written here independently of
the operator's accelerator table so that a mistake in that table shows up as a scheduling failure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
TPU_TAINT = {"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
ZONE = "us-west4-a"


@dataclasses.dataclass(frozen=True)
class NodePool:
    """One GKE node pool: ``hosts`` identical nodes with the same labels, taints and capacity."""

    name: str
    hosts: int
    machine_type: str
    cpu: str
    memory: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    extended: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. google.com/tpu: "4"

    def node_names(self) -> list[str]:
        return [f"gke-test-{self.name}-{i}" for i in range(self.hosts)]

    def nodes(self) -> list[dict[str, Any]]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", **self.extended}
        return [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": dict(KWOK_ANNOTATION),
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node.kubernetes.io/instance-type": self.machine_type,
                        "topology.kubernetes.io/zone": ZONE,
                        "cloud.google.com/gke-nodepool": self.name,
                        "cloud.google.com/machine-family": self.machine_type.split("-")[0],
                        "type": "kwok",
                        **self.labels,
                    },
                },
                "spec": {"taints": [dict(t) for t in self.taints]},
                "status": {"capacity": capacity, "allocatable": dict(capacity)},
            }
            for name in self.node_names()
        ]


def tpu_pool(
    name: str,
    accelerator: str,
    topology: str,
    *,
    hosts: int,
    chips: int,
    machine_type: str,
    cpu: str,
    memory: str,
) -> NodePool:
    return NodePool(
        name=name,
        hosts=hosts,
        machine_type=machine_type,
        cpu=cpu,
        memory=memory,
        labels={
            "cloud.google.com/gke-tpu-accelerator": accelerator,
            "cloud.google.com/gke-tpu-topology": topology,
        },
        taints=(TPU_TAINT,),
        extended={"google.com/tpu": str(chips)},
    )


V5E_2X4 = tpu_pool(
    "v5e-2x4",
    "tpu-v5-lite-podslice",
    "2x4",
    hosts=2,  # two single-host 2x4 slices: room for a two-replica server
    chips=8,
    machine_type="ct5lp-hightpu-8t",
    cpu="224",
    memory="384Gi",
)
V5E_2X4_MULTI = tpu_pool(  # the other 2x4: two 4-chip hosts, labelled like the 8-chip pool above
    "v5e-2x4-multi",
    "tpu-v5-lite-podslice",
    "2x4",
    hosts=2,
    chips=4,
    machine_type="ct5lp-hightpu-4t",
    cpu="112",
    memory="192Gi",
)
V5E_4X4 = tpu_pool(
    "v5e-4x4",
    "tpu-v5-lite-podslice",
    "4x4",
    hosts=4,
    chips=4,
    machine_type="ct5lp-hightpu-4t",
    cpu="112",
    memory="192Gi",
)
V5P_2X2X2 = tpu_pool(
    "v5p-2x2x2",
    "tpu-v5p-slice",
    "2x2x2",
    hosts=2,
    chips=4,
    machine_type="ct5p-hightpu-4t",
    cpu="208",
    memory="448Gi",
)
V6E_2X4 = tpu_pool(
    "v6e-2x4",
    "tpu-v6e-slice",
    "2x4",
    hosts=1,
    chips=8,
    machine_type="ct6e-standard-8t",
    cpu="180",
    memory="1440Gi",
)
L4 = NodePool(
    name="l4",
    hosts=2,
    machine_type="g2-standard-24",
    cpu="24",
    memory="96Gi",
    labels={"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-gpu": "true"},
    taints=(GPU_TAINT,),
    extended={"nvidia.com/gpu": "2"},
)
CPU = NodePool(name="cpu", hosts=2, machine_type="n2-standard-16", cpu="16", memory="64Gi")

DEFAULT_POOLS = (V5E_2X4, V5E_2X4_MULTI, V5E_4X4, V5P_2X2X2, V6E_2X4, L4, CPU)
