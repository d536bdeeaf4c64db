"""GKE Inference Gateway: the InferencePool (Gateway API Inference Extension,
``inference.networking.k8s.io/v1``) of a GemmaServer with ``spec.inferencePool``. It selects exactly the
server's pods on the runtime's port and names the endpoint picker (EPP) Service that the gateway asks which
pod takes each request; the picker reads each pod's load from its /metrics (the vLLM names in
``gemma_runtime.metric_names``). The operator renders and owns the pool, applied only while its CRD is
served; the picker, the Gateway and the HTTPRoute are the user's."""

from __future__ import annotations

from typing import Any

from gemma_operator.api.serving import GemmaServerSpec
from gemma_operator.config import Settings
from gemma_operator.render import naming
from gemma_operator.render.env import render

POOL_API = "inference.networking.k8s.io/v1"
POOL_KIND = "InferencePool"


def pool_name(name: str) -> str:
    """The pool is named like the server: the HTTPRoute's backendRef and the picker's --pool-name."""
    return naming.child_name(name, limit=253)


def picker_service(name: str, spec: GemmaServerSpec) -> str | None:
    """The endpoint picker's Service the pool names (``<server>-epp`` unless set); None without a pool."""
    if spec.inference_pool is None:
        return None
    return spec.inference_pool.endpoint_picker.name or naming.child_name(name, "epp")


def render_inference_pool(
    obj: dict[str, Any], spec: GemmaServerSpec, settings: Settings
) -> dict[str, Any] | None:
    """The InferencePool over the server's pods, or None when ``spec.inferencePool`` is unset."""
    if spec.inference_pool is None:
        return None
    meta = obj["metadata"]
    name = meta["name"]
    picker = spec.inference_pool.endpoint_picker
    return render(
        "inferencepool.yaml.j2",
        name=pool_name(name),
        namespace=meta["namespace"],
        labels=naming.server_labels(name),
        owner=naming.owner_reference(obj),
        selector=naming.server_selector(name),
        port=settings.runtime_port,
        picker=picker_service(name, spec),
        picker_port=picker.port,
        failure_mode=picker.failure_mode,
    )
