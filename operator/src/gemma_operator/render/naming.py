"""Names and labels of every child, in one place."""

from __future__ import annotations

import hashlib
from typing import Any

GROUP = "gemma.ai"
MANAGED_BY = "gemma-operator"
SERVER_LABEL = f"{GROUP}/server"
TRAINING_LABEL = f"{GROUP}/training"
CONFIG_HASH = f"{GROUP}/config-hash"
CONFIG_FILE = "/etc/gemma/runtime.yaml"


def child_name(owner: str, suffix: str = "", limit: int = 63) -> str:
    """``owner-suffix``, shortened with a stable hash when it would pass ``limit`` (Service names: 63)."""
    name = f"{owner}-{suffix}" if suffix else owner
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = limit - len(digest) - len(suffix) - 2
    return f"{owner[:keep].rstrip('-')}-{digest}" + (f"-{suffix}" if suffix else "")


def server_selector(name: str) -> dict[str, str]:
    """The labels pods are selected by: stable for the life of the resource."""
    return {SERVER_LABEL: name}


def server_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gemma-server",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **server_selector(name),
    }


def training_selector(name: str) -> dict[str, str]:
    return {TRAINING_LABEL: name}


def training_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gemma-training",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        TRAINING_LABEL: name,
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
