"""Plain Kubernetes workloads shaped like TPU jobs, for the harness's own tests and the demo."""

from __future__ import annotations

from typing import Any

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok fakes the kubelet
TPU_TOLERATION = {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}


def tpu_pod_spec(accelerator: str, topology: str, chips: int) -> dict[str, Any]:
    """A pod spec that asks for one TPU host's ``chips`` on a GKE node pool of that slice."""
    return {
        "nodeSelector": {
            "cloud.google.com/gke-tpu-accelerator": accelerator,
            "cloud.google.com/gke-tpu-topology": topology,
        },
        "tolerations": [TPU_TOLERATION],
        "containers": [
            {
                "name": "main",
                "image": PAUSE_IMAGE,
                "resources": {
                    "requests": {"google.com/tpu": str(chips)},
                    "limits": {"google.com/tpu": str(chips)},
                },
            }
        ],
    }


def tpu_deployment(name: str, accelerator: str, topology: str, chips: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": tpu_pod_spec(accelerator, topology, chips)},
        },
    }


def indexed_job(
    name: str,
    accelerator: str,
    topology: str,
    *,
    hosts: int,
    chips: int,
    annotations: dict[str, str] | None = None,
    backoff_limit: int = 0,
) -> dict[str, Any]:
    """An Indexed Job with one pod per host of the slice, all-or-nothing like a TPU training job."""
    spec = tpu_pod_spec(accelerator, topology, chips)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": hosts,
            "parallelism": hosts,
            "backoffLimit": backoff_limit,
            "template": {"metadata": {"annotations": annotations or {}}, "spec": spec},
        },
    }
