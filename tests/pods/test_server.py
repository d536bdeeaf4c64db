"""GemmaServers as real pods: the tiny sample from the runtime image, and an hf:// server whose init
container downloads a private checkpoint from the stand-in Hub with the token from a Secret."""

from __future__ import annotations

import copy
import urllib.request
from pathlib import Path
from typing import Any

import openai
import yaml

from gemma_runtime.variants import tiny_config
from tests.api_cases import REPO
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.pods import RUNTIME_CPU
from tests.cluster.harness.real_node import NODE_IP, NODE_NAME
from tests.fakes.checkpoints import write_hf
from tests.fakes.hub import PRIVATE, TOKEN, FakeHub, FakeRepo, serving
from tests.pods.conftest import apply, get, pods, wait_phase

SAMPLES = REPO / "manifests" / "samples"
TINY_TOKENIZER = REPO / "runtime" / "src" / "gemma_runtime" / "data"


def _sample(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    # The node has two cores: ask for a share of one.
    document["spec"].setdefault("pod", {})["resources"] = {"requests": {"cpu": RUNTIME_CPU, "memory": "1Gi"}}
    return document


def _service_url(cluster: LocalCluster, namespace: str, name: str) -> str:
    """The Service's cluster IP: kube-proxy routes it to the pod, from this machine as from a pod."""
    service = get(cluster, namespace, "service", name)
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['spec']['clusterIP']}:{port}"


def _complete(base: str) -> openai.types.Completion:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=120, max_retries=0)
    model = client.models.list().data[0].id
    return client.completions.create(model=model, prompt="The weather today", max_tokens=8)


def _metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples in ``text``."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert values, f"{name} not in /metrics"
    return sum(values)


def test_the_tiny_server_runs_as_a_real_pod_and_answers_the_openai_client(
    installed: LocalCluster, workloads: str
) -> None:
    apply(installed, workloads, _sample("server-tiny-cpu"))
    wait_phase(installed, workloads, "gemmaserver", "tiny", phase="Ready", timeout=600)
    (pod,) = pods(installed, workloads, "app.kubernetes.io/instance=tiny")
    assert pod["spec"]["nodeName"] == NODE_NAME
    runtime = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "runtime")
    assert runtime["ready"], runtime
    assert runtime["imageID"], runtime  # a container the kubelet started from our image
    installed.kubectl("-n", workloads, "wait", "--for=condition=Ready", f"pod/{pod['metadata']['name']}")

    answer = _complete(_service_url(installed, workloads, "tiny"))
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    assert answer.choices[0].finish_reason == "length"

    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert _metric(metrics, "gemma_generation_tokens_total") >= 8
    assert _metric(metrics, 'gemma_requests_finished_total{reason="length"}') >= 1


def test_an_hf_server_downloads_a_private_checkpoint_with_the_secrets_token(
    installed: LocalCluster, workloads: str, tmp_path: Path
) -> None:
    # A random Gemma 1 of the tiny preset's vocabulary (the packaged tiny tokenizer's).
    checkpoint = write_hf(tmp_path / "checkpoint", tiny_config(1, num_layers=2, vocab_size=1024))
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    files["tokenizer.model"] = (TINY_TOKENIZER / "tiny_tokenizer.model").read_bytes()
    hub = FakeHub(cdn_host=NODE_IP)
    hub.repos[PRIVATE] = FakeRepo({"main": files}, private=True)
    hub.grants[TOKEN] = {PRIVATE}
    installed.kubectl("-n", workloads, "create", "secret", "generic", "hf", f"--from-literal=token={TOKEN}")
    with serving(hub, host=NODE_IP):  # the node's address: pods reach it through their bridge
        server = copy.deepcopy(_sample("server-tiny-cpu"))
        server["metadata"]["name"] = "private"
        server["spec"]["model"]["checkpoint"] = {
            "uri": f"hf://{PRIVATE}",
            "secretRef": {"name": "hf", "key": "token"},
        }
        server["spec"]["pod"]["env"] = [{"name": "HF_ENDPOINT", "value": hub.url}]
        apply(installed, workloads, server)
        wait_phase(installed, workloads, "gemmaserver", "private", phase="Ready", timeout=600)
        answer = _complete(_service_url(installed, workloads, "private"))
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    assert hub.file_gets("model.safetensors.index.json") == 1
    assert all(header == f"Bearer {TOKEN}" for path, header in hub.auth.items() if "/resolve/" in path)
