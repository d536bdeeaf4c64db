"""Apply a sample, wait until it settles, and describe the outcome in a form two runs can compare:
phase, condition types, statuses and reasons, counts, and the children by kind and name (messages and
pod names differ between runs and are left out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.api_cases import load
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.test_server import _prerequisites

CHILD_KINDS = "configmaps,services,deployments,jobs,poddisruptionbudgets,horizontalpodautoscalers"
LABEL = {"GemmaServer": "gemma.ai/server", "GemmaTraining": "gemma.ai/training"}
# Where each sample settles on the fake node pools (a multislice training needs JobSet, not installed).
SETTLED = {"GemmaServer": "Ready", "GemmaTraining": "Running", "training-multislice-v5p": "Failed"}


def settled_phase(path: Path) -> str:
    return SETTLED.get(path.stem) or SETTLED[load(path)["kind"]]


def apply(cluster: LocalCluster, namespace: str, path: Path) -> dict[str, Any]:
    doc = load(path)
    _prerequisites(cluster, namespace, doc)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(doc))
    return doc


def get(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("-n", namespace, "get", doc["kind"].lower(), doc["metadata"]["name"], "-o", "json")
    obj: dict[str, Any] = json.loads(out)
    return obj


def wait_settled(
    cluster: LocalCluster, namespace: str, doc: dict[str, Any], phase: str, timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cluster, namespace, doc)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == phase else None

    try:
        return wait_for(check, timeout, f"{doc['kind']} {doc['metadata']['name']} to be {phase}")
    except TimeoutError:
        status = get(cluster, namespace, doc).get("status")
        events = cluster.kubectl(
            "-n", namespace, "get", "events", "-o", "custom-columns=R:.reason,M:.message"
        )
        raise AssertionError(
            f"{doc['metadata']['name']} never {phase} in {namespace}; status: {json.dumps(status)}\n{events}"
        ) from None


def children(cluster: LocalCluster, namespace: str, doc: dict[str, Any], *flags: str) -> list[dict[str, Any]]:
    selector = f"{LABEL[doc['kind']]}={doc['metadata']['name']}"
    out = cluster.kubectl("-n", namespace, "get", CHILD_KINDS, "-l", selector, "-o", "json", *flags)
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def pods(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    selector = f"{LABEL[doc['kind']]}={doc['metadata']['name']}"
    out = cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json")
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def outcome(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    """What a run reconciled the sample to, comparable across namespaces and operators."""
    status = get(cluster, namespace, doc)["status"]
    counts = ("replicas", "readyReplicas", "attempt", "restarts", "accelerator", "selector")
    return {
        "phase": status["phase"],
        "conditions": sorted((c["type"], c["status"], c["reason"]) for c in status["conditions"]),
        "endpoint": (status.get("endpoint") or "").replace(f".{namespace}.", ".NAMESPACE."),
        **{k: status[k] for k in counts if k in status},
        "children": sorted(f"{c['kind']}/{c['metadata']['name']}" for c in children(cluster, namespace, doc)),
        "pods": sorted(p["status"].get("phase", "") for p in pods(cluster, namespace, doc)),
    }


def managers(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> set[str]:
    """Field managers that applied or updated the children (the operator's, not the controllers')."""
    return {
        entry["manager"]
        for child in children(cluster, namespace, doc, "--show-managed-fields")
        for entry in child["metadata"].get("managedFields", [])
        if entry.get("operation") == "Apply" and not entry.get("subresource")
    }
