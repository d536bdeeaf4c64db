"""The operator's only door to the cluster: the one package that imports ``kubernetes``.

Everything here is synchronous and speaks plain dicts (camelCase keys, as the API returns them); the
client's exceptions never leave it (see :mod:`gemma_operator.k8s.errors` for the hierarchy).
"""

from gemma_operator.k8s.apply import apply_all, apply_order, prune
from gemma_operator.k8s.client import Kube, connect
from gemma_operator.k8s.errors import (
    Cause,
    ConflictError,
    ForbiddenError,
    InvalidError,
    KubeError,
    NotFoundError,
    TransientError,
    translate,
)
from gemma_operator.k8s.events import REPORTING_CONTROLLER, EventRecorder, EventType

__all__ = [
    "REPORTING_CONTROLLER",
    "Cause",
    "ConflictError",
    "EventRecorder",
    "EventType",
    "ForbiddenError",
    "InvalidError",
    "Kube",
    "KubeError",
    "NotFoundError",
    "TransientError",
    "apply_all",
    "apply_order",
    "connect",
    "prune",
    "translate",
]
