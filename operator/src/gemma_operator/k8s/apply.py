"""Apply a set of children in a safe order, and prune the children no longer desired."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gemma_operator.k8s.client import Kube
from gemma_operator.k8s.errors import NotFoundError

# What a workload references must exist before it: a pod that mounts a missing ConfigMap or runs as a
# missing ServiceAccount is stuck until the next resync. PDB and HPA point at workloads, so they come last.
_RANK: dict[str, int] = {
    "Namespace": 0,
    "ServiceAccount": 1,
    "ConfigMap": 1,
    "Secret": 1,
    "PersistentVolumeClaim": 1,
    "Role": 2,
    "RoleBinding": 2,
    "Service": 3,
    "PodDisruptionBudget": 5,
    "HorizontalPodAutoscaler": 5,
}
_WORKLOAD_RANK = 4  # Deployment, StatefulSet, Job, JobSet, LeaderWorkerSet, and any kind not listed


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``objects`` in the order to apply them; the caller's order is kept within a rank."""
    return sorted(objects, key=lambda obj: _RANK.get(obj["kind"], _WORKLOAD_RANK))


def apply_all(
    kube: Kube, objects: Iterable[dict[str, Any]], field_manager: str, force: bool = True
) -> list[dict[str, Any]]:
    """Server-side apply every object in :func:`apply_order`; returns the objects as stored."""
    return [kube.apply(obj, field_manager=field_manager, force=force) for obj in apply_order(objects)]


def prune(
    kube: Kube,
    owner_uid: str,
    namespace: str,
    *,
    kinds: Sequence[tuple[str, str]],
    keep: set[tuple[str, str]],
    label_selector: str,
) -> list[str]:
    """Delete the children of ``owner_uid`` that are not in ``keep`` (as ``(kind, name)``).

    Only objects matching ``label_selector`` *and* holding an ownerReference to ``owner_uid`` are
    candidates, so a user's object that happens to carry our labels is never touched. ``kinds`` lists
    ``(apiVersion, kind)`` to look at; a kind the server does not serve has no children to prune.
    Returns ``kind/name`` of each deleted object."""
    deleted: list[str] = []
    for api_version, kind in kinds:
        try:
            children = kube.list(api_version, kind, namespace=namespace, label_selector=label_selector)
        except NotFoundError:
            continue
        for child in children:
            name = child["metadata"]["name"]
            if (kind, name) in keep or not _owned_by(child, owner_uid):
                continue
            if kube.delete(api_version, kind, name, namespace=namespace):
                deleted.append(f"{kind}/{name}")
    return deleted


def _owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    references = obj["metadata"].get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid for ref in references)
