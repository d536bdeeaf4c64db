"""The operator reconciling GemmaServers on the real control plane with fake GKE node pools:
every serving sample becomes Ready on the right pool; a pool that does not exist gives Degraded with
the scheduler's reason; scale, rollout, suspend, deleting a child, deleting the server, killing the
operator mid-reconcile and an invalid spec that slipped past admission all converge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api_cases import SAMPLE_FILES, load, merge, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.nodes import DEFAULT_POOLS
from tests.cluster.harness.operator import OperatorProcess
from tests.cluster.harness.runtime import rendered_config
from tests.cluster.harness.wait import wait_for

SERVERS = [p for p in SAMPLE_FILES if load(p)["kind"] == "GemmaServer"]
POOL_OF_NODE = {node: pool.name for pool in DEFAULT_POOLS for node in pool.node_names()}
EXPECTED_POOL = {"v5e": "v5e-2x4", "v6e": "v6e-2x4", "cpu": "cpu"}


def _apply(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(doc))


def _get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def _server(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj = _get(cluster, namespace, "gemmaserver", name)
    assert obj is not None
    return obj


def _phase(
    cluster: LocalCluster, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = _server(cluster, namespace, name)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == phase else None

    try:
        return wait_for(check, timeout, f"GemmaServer {name} to be {phase}")
    except TimeoutError:
        raise AssertionError(
            f"{name} never {phase}; status: {json.dumps(_server(cluster, namespace, name).get('status'))}"
        ) from None


def _prerequisites(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> None:
    """What a user creates before applying the sample: its ServiceAccount, token Secret and volume."""
    spec = doc["spec"]
    account = spec.get("pod", {}).get("serviceAccountName")
    if account:
        cluster.kubectl("-n", namespace, "create", "serviceaccount", account)
    secret = spec["model"].get("checkpoint", {}).get("secretRef")
    if secret:
        cluster.kubectl(
            "-n", namespace, "create", "secret", "generic", secret["name"], "--from-literal=token=hf_test"
        )
    uri = spec["model"].get("checkpoint", {}).get("uri", "")
    if uri.startswith("pvc://"):
        claim = uri.removeprefix("pvc://").split("/")[0]
        volume = f"{namespace}-{claim}"
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{volume}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "100Gi"}},
                },
            },
        ]
        cluster.kubectl("apply", "-f", "-", input_text="\n---\n".join(json.dumps(m) for m in manifests))
        wait_for(
            lambda: _get(cluster, namespace, "pvc", claim).get("status", {}).get("phase") == "Bound",
            60,
            f"claim {claim} to bind",
        )


def _pods(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", namespace, "get", "pods", "-l", f"gemma.ai/server={name}", "-o", "json")
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


@pytest.mark.parametrize("path", SERVERS, ids=lambda p: p.stem)
def test_every_serving_sample_becomes_ready_on_its_pool(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, path: Path
) -> None:
    doc = load(path)
    name = doc["metadata"]["name"]
    _prerequisites(crds, namespace, doc)
    _apply(crds, namespace, doc)
    obj = _phase(crds, namespace, name, "Ready", timeout=90)
    status = obj["status"]
    want = (
        doc["spec"].get("replicas", 1)
        if "autoscaling" not in doc["spec"]
        else doc["spec"]["autoscaling"].get("minReplicas", 1)
    )
    assert status["readyReplicas"] == want
    assert status["endpoint"] == f"http://{name}.{namespace}.svc:8000/v1"
    # The session's cluster has no InferencePool CRD: a pooled server serves and says so.
    pool = {"InferencePoolApplied": "False"} if "inferencePool" in doc["spec"] else {}
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "Progressing": "False", "Degraded": "False", "Suspended": "False",
        "SourcesReady": "True", **pool,
    }  # fmt: skip
    pools = {POOL_OF_NODE[p["spec"]["nodeName"]] for p in _pods(crds, namespace, name)}
    assert pools == {EXPECTED_POOL[doc["spec"]["accelerator"]["type"]]}
    table = crds.kubectl("-n", namespace, "get", "gemmaservers", name)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "ACCELERATOR", "REPLICAS", "READY", "PHASE", "ENDPOINT", "AGE"]
    assert "Ready" in row
    assert doc["spec"]["model"]["variant"] in row


def test_a_pool_that_does_not_exist_is_degraded_with_the_scheduler_reason(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    doc = merge(
        sample("server-gemma-7b-v5e"),
        {"spec": {"accelerator": {"type": "v5p", "topology": "2x2x1"}, "replicas": 1}},
    )
    _prerequisites(crds, namespace, doc)
    _apply(crds, namespace, doc)
    _phase(crds, namespace, "gemma-7b", "Degraded", timeout=60)

    def unschedulable() -> dict[str, Any] | None:
        # Right after the ServiceAccount is created, pod creation may briefly fail (FailedCreate) until
        # the admission cache sees it; the scheduler's verdict follows.
        conditions = _server(crds, namespace, "gemma-7b")["status"]["conditions"]
        degraded = next(c for c in conditions if c["type"] == "Degraded")
        return degraded if degraded["reason"] == "Unschedulable" else None

    degraded = wait_for(unschedulable, 60, "the scheduler's reason")
    assert "0/15 nodes are available" in degraded["message"]
    events = crds.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.kind=GemmaServer"
    )
    assert "Unschedulable" in events


def test_pods_that_cannot_be_created_are_degraded_with_the_reason(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    _apply(crds, namespace, sample("server-gemma-7b-v5e"))  # its ServiceAccount does not exist
    obj = _phase(crds, namespace, "gemma-7b", "Degraded", timeout=60)
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "FailedCreate"
    assert 'serviceaccount "gemma-reader" not found' in degraded["message"]


def test_a_pod_whose_tpu_is_missing_is_degraded_with_the_runtimes_reason(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    # The real runtime, started with the pod's JAX_PLATFORMS and config on this machine (no TPU), exits
    # instead of serving on the CPU; the kubelet's part (a crash loop with its message) is kwok's.
    doc = merge(sample("server-tiny-cpu"), {"spec": {"accelerator": {"type": "v5e", "topology": "2x4"}}})
    name = doc["metadata"]["name"]
    _apply(crds, namespace, doc)
    (pod,) = wait_for(lambda: _pods(crds, namespace, name) or None, 60, "the server's pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["JAX_PLATFORMS"] == "tpu"
    config = tmp_path / "runtime.yaml"
    config.write_text(yaml.safe_dump(rendered_config(crds, f"gemma.ai/server={name}", namespace)))
    message = tmp_path / "termination-log"
    args = [a.replace("/etc/gemma/runtime.yaml", str(config)) for a in container["args"]]
    args[args.index("/dev/termination-log")] = str(message)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    done = subprocess.run(
        [sys.executable, "-m", "gemma_runtime", *args],
        env={**environ, "JAX_PLATFORMS": env["JAX_PLATFORMS"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    crds.kubectl(
        "-n", namespace, "annotate", "pod", pod["metadata"]["name"], "kwok.gemma.ai/crash-exit-code=1",
        f"kwok.gemma.ai/exit-message={message.read_text()}",
    )  # fmt: skip
    obj = _phase(crds, namespace, name, "Degraded", timeout=60)
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AcceleratorMissing"
    assert "promised tpu devices but JAX could not start them" in degraded["message"]
    events = crds.kubectl("-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}")
    assert "AcceleratorMissing" in events


def test_scale_rollout_suspend_and_child_repair_converge(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    doc = sample("server-tiny-cpu")
    _apply(crds, namespace, doc)
    _phase(crds, namespace, "tiny", "Ready")

    crds.kubectl("-n", namespace, "scale", "gemmaserver", "tiny", "--replicas=2")
    assert _phase(crds, namespace, "tiny", "Ready")["status"]["readyReplicas"] == 2
    assert _get(crds, namespace, "deployment", "tiny")["spec"]["replicas"] == 2

    before = _get(crds, namespace, "deployment", "tiny")["spec"]["template"]["metadata"]["annotations"][
        "gemma.ai/config-hash"
    ]
    _apply(crds, namespace, merge(doc, {"spec": {"replicas": 2, "serving": {"maxBatchSize": 4}}}))
    ready = _phase(crds, namespace, "tiny", "Ready")
    deployment = _get(crds, namespace, "deployment", "tiny")
    assert deployment["spec"]["template"]["metadata"]["annotations"]["gemma.ai/config-hash"] != before
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    assert "max_batch_size: 4" in _get(crds, namespace, "configmap", "tiny-config")["data"]["runtime.yaml"]

    _apply(
        crds,
        namespace,
        merge(doc, {"spec": {"replicas": 2, "serving": {"maxBatchSize": 4}, "suspend": True}}),
    )
    _phase(crds, namespace, "tiny", "Suspended")
    wait_for(lambda: not _pods(crds, namespace, "tiny"), 30, "pods to go")
    _apply(
        crds,
        namespace,
        merge(doc, {"spec": {"replicas": 2, "serving": {"maxBatchSize": 4}, "suspend": False}}),
    )
    _phase(crds, namespace, "tiny", "Ready")

    for kind, name in [("deployment", "tiny"), ("service", "tiny"), ("configmap", "tiny-config")]:
        crds.kubectl("-n", namespace, "delete", kind, name, "--wait=false")
        wait_for(partial(_get, crds, namespace, kind, name), 30, f"{kind} {name} to come back")
    _phase(crds, namespace, "tiny", "Ready")
    deployments = json.loads(crds.kubectl("-n", namespace, "get", "deployments", "-o", "json"))["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["tiny"]


def test_deleting_the_server_removes_every_child(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    _apply(crds, namespace, sample("server-gemma2-9b-int8-v6e"))
    _phase(crds, namespace, "gemma2-9b-int8", "Ready")
    assert _get(crds, namespace, "hpa", "gemma2-9b-int8") is not None
    crds.kubectl("-n", namespace, "delete", "gemmaserver", "gemma2-9b-int8")

    def gone() -> bool:
        out = crds.kubectl(
            "-n",
            namespace,
            "get",
            "deployments,services,configmaps,pdb,hpa",
            "-l",
            "gemma.ai/server=gemma2-9b-int8",
            "-o",
            "name",
        )
        return not out.strip()

    wait_for(gone, 60, "the garbage collector to remove every child")


def test_killing_the_operator_mid_reconcile_converges_without_duplicates(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    doc = sample("server-tiny-cpu")
    _apply(crds, namespace, doc)
    time.sleep(0.3)  # the operator is in the middle of its first reconcile
    running_operator.kill()
    _apply(crds, namespace, merge(doc, {"spec": {"replicas": 2}}))
    running_operator.start()
    obj = _phase(crds, namespace, "tiny", "Ready")
    assert obj["status"]["readyReplicas"] == 2
    names = crds.kubectl(
        "-n",
        namespace,
        "get",
        "deployments,services,configmaps,pdb",
        "-l",
        "gemma.ai/server=tiny",
        "-o",
        "name",
    ).split()
    assert sorted(names) == sorted(
        ["deployment.apps/tiny", "service/tiny", "configmap/tiny-config", "poddisruptionbudget.policy/tiny"]
    )


def test_reconcile_metrics_are_exported(running_operator: OperatorProcess) -> None:
    text = running_operator.metrics()
    assert 'gemma_operator_reconciles_total{kind="GemmaServer",result="ok"}' in text
    assert "gemma_operator_reconcile_seconds_bucket" in text


def test_an_invalid_spec_past_admission_is_reported_and_touches_no_workload(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    """An old or hand-edited CRD lets a bad spec in: the operator names the field in a condition and an
    Event, and leaves the running Deployment exactly as it was."""
    _apply(crds, namespace, sample("server-tiny-cpu"))
    _phase(crds, namespace, "tiny", "Ready")
    before = _get(crds, namespace, "deployment", "tiny")
    assert before is not None
    crd = json.loads(crds.kubectl("get", "crd", "gemmaservers.gemma.ai", "-o", "json"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    try:
        crds.kubectl("replace", "-f", "-", input_text=json.dumps(crd))
        bad = json.dumps({"spec": {"accelerator": {"type": "v5e", "topology": "3x3"}}})

        def patched() -> bool:
            # The API server takes a moment to serve the replaced schema; until then CEL refuses.
            crds.kubectl(
                "-n", namespace, "patch", "gemmaserver", "tiny", "--type=merge", "-p", bad, check=False
            )
            return bool(_server(crds, namespace, "tiny")["spec"]["accelerator"].get("topology") == "3x3")

        wait_for(patched, 30, "the permissive CRD to accept the bad spec")
        obj = _phase(crds, namespace, "tiny", "Failed")
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert "spec.accelerator.topology: topology '3x3' is not valid for TPU v5e" in ready["message"]
        events = crds.kubectl(
            "-n", namespace, "get", "events", "--field-selector", "reason=InvalidSpec", "-o", "json"
        )
        assert any(e["type"] == "Warning" for e in json.loads(events)["items"])
        after = _get(crds, namespace, "deployment", "tiny")
        assert after is not None
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert after["spec"] == before["spec"]
    finally:
        crds.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=gemma-tests",
            "-f",
            str(Path(__file__).parents[3] / "crds"),
        )


def test_serving_figures_are_pulled_from_the_pods_stats(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    """A stand-in for the runtime answers /stats on the pod's IP (kwok's pod CIDR is loopback)."""
    import http.server
    import threading

    _apply(crds, namespace, sample("server-tiny-cpu"))
    _phase(crds, namespace, "tiny", "Ready")
    (pod,) = _pods(crds, namespace, "tiny")
    stats = {"requests_running": 3, "requests_waiting": 2, "generated_tokens_per_second": 41.5}

    class Stats(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((pod["status"]["podIP"], 8000), Stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        figures = wait_for(
            lambda: _server(crds, namespace, "tiny")["status"].get("serving"), 30, "serving figures in status"
        )
        assert figures == {"requestsRunning": 3, "requestsWaiting": 2, "generatedTokensPerSecond": 41.5}
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_that_cannot_fit_is_failed_and_an_unset_batch_gets_what_fits(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    """Gemma 2 27B in bf16 on a v5e 2x2 host with 32 slots of 8192 tokens: Failed, naming the fields and
    the numbers, and no workload; without maxBatchSize it gets the largest batch that fits; on a 2x4 host
    it becomes Ready with the computed batch in its runtime config."""
    doc = merge(sample("server-gemma-7b-v5e"), {"metadata": {"name": "big"}})
    doc["spec"]["model"]["variant"] = "gemma2-27b"
    doc["spec"]["accelerator"]["topology"] = "2x2"
    doc["spec"]["replicas"] = 1
    doc["spec"]["serving"] = {"maxBatchSize": 32, "maxSequenceLength": 8192}
    _prerequisites(crds, namespace, doc)
    _apply(crds, namespace, doc)
    obj = _phase(crds, namespace, "big", "Failed")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DoesNotFit"
    for words in (
        "spec.model.variant gemma2-27b",
        "spec.accelerator v5e 2x2",
        "spec.serving.maxBatchSize 32",
        "spec.serving.maxSequenceLength 8192",
        "weights 12.68 GiB",
        "at most 2 slots fit at 8192 tokens",  # XLA's TPU compiler: 3 need 15.76 of 15.75 GiB
    ):
        assert words in ready["message"]
    assert "plan" not in obj["status"]
    assert _get(crds, namespace, "deployment", "big") is None
    assert _get(crds, namespace, "configmap", "big-config") is None
    events = crds.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "reason=DoesNotFit", "-o", "json"
    )
    assert any(e["type"] == "Warning" for e in json.loads(events)["items"])

    unset = json.dumps({"spec": {"serving": {"maxBatchSize": None}}})
    crds.kubectl("-n", namespace, "patch", "gemmaserver", "big", "--type=merge", "-p", unset)

    def planned(slots: int | None = None) -> dict[str, Any] | None:
        obj = _server(crds, namespace, "big")
        status = obj.get("status", {})
        plan = status.get("plan")
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return plan if current and plan and (slots is None or plan["maxBatchSize"] == slots) else None

    plan = wait_for(lambda: planned(2), 60, "the plan of the largest batch that fits 2x2")
    assert plan["mesh"] == "1x4"
    config = _get(crds, namespace, "configmap", "big-config")
    assert config is not None
    assert "max_batch_size: 2\n" in config["data"]["runtime.yaml"]

    wider = json.dumps({"spec": {"accelerator": {"topology": "2x4"}}})
    crds.kubectl("-n", namespace, "patch", "gemmaserver", "big", "--type=merge", "-p", wider)
    obj = _phase(crds, namespace, "big", "Ready", timeout=90)
    plan = obj["status"]["plan"]
    assert plan["mesh"] == "1x8"
    assert plan["maxBatchSize"] > 2
    assert plan["weightBytesPerChip"] + plan["kvCacheBytesPerChip"] <= plan["usableBytesPerChip"]
    runtime = _get(crds, namespace, "configmap", "big-config")["data"]["runtime.yaml"]
    assert f"max_batch_size: {plan['maxBatchSize']}\n" in runtime
