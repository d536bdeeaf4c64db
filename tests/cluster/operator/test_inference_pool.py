"""GKE Inference Gateway's InferencePool on a real control plane, the operator running as the chart's
ServiceAccount: without the InferencePool CRD a GemmaServer with spec.inferencePool becomes Ready as
before and says why it has no pool (InferencePoolApplied=False, CRDNotInstalled, a Warning Event); once
the CRD from the Go module sigs.k8s.io/gateway-api-inference-extension is installed (its own schema and
CEL rules judge the rendered pool) the operator applies the pool, owned by the server and selecting
exactly its pods, not a neighbour's, on the port the pods serve; a spec change updates it and removing
the field deletes it. The cluster is this module's own: the session's never gets the CRD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.api_cases import merge, sample
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.crds import INFERENCE_POOL, crd_file, install_crd
from tests.cluster.harness.required import required
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.chart_operator import chart_operator

NS = "gateway"
NAME = "tiny-pooled"  # the sample's server
POOLS = "inferencepools.inference.networking.k8s.io"


def _parts() -> Path:
    crd_file(INFERENCE_POOL)
    return ensure_binaries()


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return required("control plane or InferencePool CRD", _parts)


def _get(cluster: LocalCluster, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("-n", NS, "get", kind, name, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def _condition(cluster: LocalCluster) -> dict[str, Any] | None:
    server = _get(cluster, "gemmaserver", NAME) or {}
    conditions = server.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "InferencePoolApplied"), None)


def _condition_is(cluster: LocalCluster, status: str, reason: str) -> dict[str, Any] | None:
    cond = _condition(cluster)
    return cond if cond is not None and (cond["status"], cond["reason"]) == (status, reason) else None


def _event_types(cluster: LocalCluster, reason: str) -> set[str]:
    out = cluster.kubectl(
        "-n",
        NS,
        "get",
        "events",
        "-o",
        "json",
        "--field-selector",
        f"involvedObject.name={NAME},reason={reason}",
    )
    return {e["type"] for e in json.loads(out)["items"]}


def _pod_names(cluster: LocalCluster, selector: dict[str, str]) -> set[str]:
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    pods = json.loads(cluster.kubectl("-n", NS, "get", "pods", "-l", labels, "-o", "json"))["items"]
    return {p["metadata"]["name"] for p in pods}


def test_the_pool_is_reported_missing_then_applied_updated_and_pruned(bin_dir: Path) -> None:
    with LocalCluster(bin_dir=bin_dir) as cluster, chart_operator(cluster):
        cluster.kubectl("create", "namespace", NS)
        pooled = merge(sample("server-tiny-inference-pool"), {"metadata": {"namespace": NS}})
        neighbour = merge(sample("server-tiny-cpu"), {"metadata": {"namespace": NS}})
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input_text=json.dumps({"kind": "List", "apiVersion": "v1", "items": [pooled, neighbour]}),
        )

        # No CRD: the server still serves, and says why it has no pool.
        missing = wait_for(lambda: _condition_is(cluster, "False", "CRDNotInstalled"), 60, "CRDNotInstalled")
        assert "inference.networking.k8s.io/v1" in missing["message"]
        wait_for(
            lambda: (_get(cluster, "gemmaserver", NAME) or {}).get("status", {}).get("phase") == "Ready",
            90,
            "the pooled server to be Ready without the CRD",
        )
        assert _event_types(cluster, "CRDNotInstalled") == {"Warning"}

        # The CRD arrives, as on a real cluster: the next reconcile applies the pool.
        install_crd(cluster, INFERENCE_POOL)
        pool = wait_for(
            lambda: _get(cluster, POOLS, NAME), 60, "the InferencePool after its CRD was installed"
        )
        server = _get(cluster, "gemmaserver", NAME)
        deployment = _get(cluster, "deployment", NAME)
        assert server is not None
        assert deployment is not None
        assert pool["metadata"]["ownerReferences"][0]["uid"] == server["metadata"]["uid"]
        selected = _pod_names(cluster, pool["spec"]["selector"]["matchLabels"])
        own = _pod_names(cluster, deployment["spec"]["selector"]["matchLabels"])
        assert selected == own
        assert len(own) == 2  # the sample's replicas
        assert not selected & _pod_names(cluster, {"gemma.ai/server": "tiny"})
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert pool["spec"]["targetPorts"] == [{"number": p["containerPort"]} for p in container["ports"]]
        assert pool["spec"]["endpointPickerRef"] == {
            "group": "",  # defaulted by the CRD
            "kind": "Service",
            "name": f"{NAME}-epp",
            "port": {"number": 9002},
            "failureMode": "FailOpen",
        }
        applied = wait_for(lambda: _condition_is(cluster, "True", "Applied"), 60, "InferencePoolApplied=True")
        assert f"{NAME}-epp:9002" in applied["message"]
        assert _event_types(cluster, "Applied") == {"Normal"}

        # A spec change updates the pool in place.
        picker = {"spec": {"inferencePool": {"endpointPicker": {"name": "shared-epp", "port": 19002}}}}
        cluster.kubectl("-n", NS, "patch", "gemmaserver", NAME, "--type=merge", "-p", json.dumps(picker))

        def repointed() -> dict[str, Any] | None:
            current = _get(cluster, POOLS, NAME)
            return (
                current if current and current["spec"]["endpointPickerRef"]["name"] == "shared-epp" else None
            )

        updated = wait_for(repointed, 60, "the pool to name the new picker")
        assert updated["spec"]["endpointPickerRef"]["port"] == {"number": 19002}
        assert updated["metadata"]["uid"] == pool["metadata"]["uid"]

        # Removing the field deletes the pool and its condition.
        remove = [{"op": "remove", "path": "/spec/inferencePool"}]
        cluster.kubectl("-n", NS, "patch", "gemmaserver", NAME, "--type=json", "-p", json.dumps(remove))
        wait_for(lambda: _get(cluster, POOLS, NAME) is None, 60, "the pool to be pruned")
        wait_for(lambda: _condition(cluster) is None, 60, "the condition to go with the field")
        assert _get(cluster, "deployment", NAME) is not None
