"""The InferencePool of GKE Inference Gateway: rendered only with spec.inferencePool, named like the server
(the HTTPRoute's backendRef), owned by it, selecting exactly the Deployment's pods on the port the runtime
container serves, and naming the endpoint picker's Service (default <server>-epp, port 9002, FailClose);
`gemma-operator render` prints it with the other children."""

from __future__ import annotations

from typing import Any

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID, render_objects
from gemma_operator.render.gateway import POOL_API, POOL_KIND, render_inference_pool
from gemma_operator.render.serving import render_server
from tests.api_cases import merge, sample


def _doc(pool: dict[str, Any] | None, name: str = "tiny") -> dict[str, Any]:
    patch: dict[str, Any] = {"metadata": {"name": name, "namespace": "team", "uid": PLACEHOLDER_UID}}
    if pool is not None:
        patch["spec"] = {"inferencePool": pool}
    return merge(sample("server-tiny-cpu"), patch)


def _pool(doc: dict[str, Any], settings: Settings | None = None) -> dict[str, Any] | None:
    return render_inference_pool(doc, parse(doc).spec, settings or Settings())


def test_no_pool_without_the_field() -> None:
    assert _pool(_doc(None)) is None
    kinds = [c["kind"] for c in render_objects(_doc(None), "team", Settings())]
    assert POOL_KIND not in kinds


def test_the_pool_selects_exactly_the_servers_pods_on_the_runtime_port() -> None:
    doc = _doc({})
    settings = Settings(runtime_port=8123)
    pool = _pool(doc, settings)
    assert pool is not None
    children = {c["kind"]: c for c in render_server(doc, parse(doc), settings)}
    deployment = children["Deployment"]
    template = deployment["spec"]["template"]
    (runtime,) = [c for c in template["spec"]["containers"] if c["name"] == "runtime"]
    assert pool["apiVersion"] == POOL_API == "inference.networking.k8s.io/v1"
    assert pool["metadata"]["name"] == "tiny"
    assert pool["metadata"]["namespace"] == "team"
    assert pool["metadata"]["ownerReferences"][0]["uid"] == PLACEHOLDER_UID
    assert pool["metadata"]["labels"] == deployment["metadata"]["labels"]  # pruned by the server's label
    # The Deployment's own selector: its pods, and no other server's (the label value is the server's name).
    assert pool["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert pool["spec"]["targetPorts"] == [{"number": 8123}]
    assert {p["containerPort"] for p in runtime["ports"]} == {8123}
    assert pool["spec"]["appProtocol"] == "http"


def test_the_picker_defaults_to_the_charts_service_name_and_port() -> None:
    pool = _pool(_doc({}))
    assert pool is not None
    assert pool["spec"]["endpointPickerRef"] == {
        "kind": "Service",
        "name": "tiny-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }


def test_the_picker_can_be_named() -> None:
    picker = {"name": "shared-epp", "port": 19002, "failureMode": "FailOpen"}
    pool = _pool(_doc({"endpointPicker": picker}))
    assert pool is not None
    assert pool["spec"]["endpointPickerRef"] == {
        "kind": "Service",
        "name": "shared-epp",
        "port": {"number": 19002},
        "failureMode": "FailOpen",
    }


def test_a_long_server_name_gives_a_valid_service_name() -> None:
    name = "s" * 63
    pool = _pool(_doc({}, name=name))
    assert pool is not None
    picker = pool["spec"]["endpointPickerRef"]["name"]
    assert len(picker) <= 63
    assert picker.endswith("-epp")
    assert pool["metadata"]["name"] == name


def test_gemma_operator_render_prints_the_pool() -> None:
    kinds = [c["kind"] for c in render_objects(_doc({}), "team", Settings())]
    assert kinds[-1] == POOL_KIND
