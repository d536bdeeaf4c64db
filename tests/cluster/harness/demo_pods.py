"""`make demo` on real pods (where a real node can run: root and `make node-deps`): our images built
here, the control plane with a real kubelet node beside kwok's fake GKE TPU pools, the chart-installed
operator running from its image, then manifests/gemma-server.yaml (simulated on the fake v5e pool and said
so), and the tiny training as real pods that checkpoint to a claim and export the model; then a
GemmaServer serving that exported checkpoint from the claim, as a real pod, answers a completion through
its Service: text shaped like the sample data the model just learned."""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from tests.api_cases import REPO, load, sample
from tests.cluster.chart.helm import Helm
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.demo import POOL_COLUMNS, banner, watch
from tests.cluster.harness.pods import RESTRICTED, RUNTIME_CPU, install_operator, real_cluster
from tests.cluster.harness.wait import wait_for

CLAIM = "demo-checkpoints"
TRAINED = "tiny-trained"


def _documents() -> list[dict[str, Any]]:
    training = sample("training-tiny-cpu")
    training["spec"]["checkpoints"] = {"uri": f"pvc://{CLAIM}/tiny", "intervalSteps": 50}
    training["spec"]["pod"] = {"resources": {"requests": {"cpu": RUNTIME_CPU, "memory": "1Gi"}}}
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    return [load(REPO / "manifests" / "gemma-server.yaml"), claim, training]


def _trained_server() -> dict[str, Any]:
    server = sample("server-tiny-cpu")
    server["metadata"]["name"] = TRAINED
    server["spec"]["model"]["checkpoint"] = {"uri": f"pvc://{CLAIM}/tiny/model"}
    server["spec"]["pod"] = {"resources": {"requests": {"cpu": RUNTIME_CPU, "memory": "1Gi"}}}
    return server


def _apply(cluster: LocalCluster, documents: list[dict[str, Any]]) -> None:
    text = "\n---\n".join(json.dumps(d) for d in documents)
    print(cluster.kubectl("apply", "-f", "-", input_text=text), flush=True)


def _complete(cluster: LocalCluster, name: str) -> tuple[str, dict[str, Any]] | None:
    """(URL, answer) of a completion through the Service, None while it does not answer yet."""
    service = json.loads(cluster.kubectl("get", "service", name, "-o", "json"))
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v1/completions"
    body = json.dumps({"model": name, "prompt": "The", "max_tokens": 32, "temperature": 0}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except OSError:
        return None
    return url, answer


def run() -> int:
    with real_cluster(log=lambda line: print(line, flush=True)) as real:
        cluster = real.cluster
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in real.timings.items())
        banner(f"images built here, control plane and a real node ready ({steps})")
        print(cluster.kubectl("get", "nodes", "-o", "wide", "-L", POOL_COLUMNS), flush=True)

        banner("helm install: the operator from its own image, in a restricted namespace")
        with tempfile.TemporaryDirectory(prefix="gemma-demo-helm-") as home:
            assert cluster.bin_dir is not None
            install_operator(
                cluster, Helm(cluster.bin_dir / "helm", Path(home), kubeconfig=cluster.kubeconfig)
            )
        cluster.kubectl("label", "namespace", "default", RESTRICTED)
        print(cluster.kubectl("-n", "gemma-system", "get", "pods", "-o", "wide"), flush=True)

        banner("kubectl apply: manifests/gemma-server.yaml (fake TPU pool), the tiny training (real pods)")
        cluster.kubectl("create", "secret", "generic", "hf-token", "--from-literal=token=hf_demo")
        _apply(cluster, _documents())
        goals = [("GemmaServer", "gemma2-9b-it", "Ready"), ("GemmaTraining", "tiny-train", "Succeeded")]
        if not watch(cluster.kubectl, goals, timeout=900):
            print("the training did not finish in 15 minutes", flush=True)
            return 1
        print(
            "(simulated: gemma2-9b-it's pods run on kwok's fake v5e pool, where no container starts; its\n"
            " download and readiness are kwok's stages. The training's pods above ran on the real node.)",
            flush=True,
        )
        status = json.loads(cluster.kubectl("get", "gemmatraining", "tiny-train", "-o", "json"))["status"]
        print(json.dumps({k: status.get(k) for k in ("phase", "progress", "lastCheckpoint")}, indent=2))

        banner(f"a GemmaServer of the model the training just exported (pvc://{CLAIM}/tiny/model)")
        _apply(cluster, [_trained_server()])
        watch(cluster.kubectl, [("GemmaServer", TRAINED, "Ready")], timeout=600)
        print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
        url, answer = wait_for(lambda: _complete(cluster, TRAINED), 120, "a completion")
        banner("a completion from the real pod, through its Service")
        print(f"POST {url} -> {json.dumps(answer, indent=2)}")
        print("(the tiny model trained for 200 steps on the sample text: the words are the sample's)")
    banner("stopped; no processes, mounts or bridge left behind")
    return 0
