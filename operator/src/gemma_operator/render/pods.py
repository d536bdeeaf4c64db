"""The runtime container and pod spec shared by servers and trainings: restricted security context,
the runtime config mounted at /etc/gemma, sources, placement and user overrides."""

from __future__ import annotations

from typing import Any

from gemma_operator.api.common import ModelCache, PodOverrides
from gemma_operator.config import Settings
from gemma_operator.render.placement import Placement
from gemma_operator.render.sources import Fetcher, Mounts

RUNTIME_USER = 65532
GRACE_SECONDS = 60  # a server's drain; a training's is sized to its checkpoint (render/plan.py)
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# spec.pod.runAsRoot: the runtime container alone runs as root, for TPU device nodes only root may open;
# every capability stays dropped (root without CAP_DAC_OVERRIDE opens only what root owns) and the pod's
# fsGroup stays among its groups, so it writes the volumes as before.
ROOT_CONTAINER_SECURITY = {**CONTAINER_SECURITY, "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUNTIME_USER,
    "runAsGroup": RUNTIME_USER,
    "fsGroup": RUNTIME_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def fetcher(image: str, settings: Settings, cache: ModelCache | None) -> Fetcher:
    """How this pod's fetch init containers run: restricted like the runtime, reporting on its port."""
    return Fetcher(
        image=image,
        security_context=CONTAINER_SECURITY,
        status_port=settings.runtime_port,
        pull_policy=settings.image_pull_policy,
        cache=cache,
    )


def runtime_pod_spec(
    *,
    image: str,
    args: list[str],
    config_map: str,
    placement: Placement,
    mounts: Mounts,
    overrides: PodOverrides,
    settings: Settings,
    env: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
    probes: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    grace_seconds: int = GRACE_SECONDS,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "env": [*(env or []), *(e.to_api() for e in overrides.env)],
        "ports": ports or [],
        "resources": placement.resources,
        "securityContext": ROOT_CONTAINER_SECURITY if overrides.run_as_root else CONTAINER_SECURITY,
        # The runtime's own message when it writes one (train), else its last log lines after a crash.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/gemma", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts.mounts,
        ],
        **(probes or {}),
    }
    spec: dict[str, Any] = {
        "securityContext": POD_SECURITY,
        # The runtime never talks to the Kubernetes API (Workload Identity does not need the token).
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds,
        "nodeSelector": placement.node_selector,
        "tolerations": placement.tolerations,
        # The fetch needs what the user set for the pod too: HF_ENDPOINT for a mirror, HTTPS_PROXY.
        "initContainers": [
            {**c, "env": [*c["env"], *(e.to_api() for e in overrides.env)]} for c in mounts.init_containers
        ],
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map}},
            {"name": "tmp", "emptyDir": {}},
            *mounts.volumes,
        ],
        **(extra or {}),
    }
    if overrides.service_account_name:
        spec["serviceAccountName"] = overrides.service_account_name
    if overrides.priority_class_name:
        spec["priorityClassName"] = overrides.priority_class_name
    return spec
