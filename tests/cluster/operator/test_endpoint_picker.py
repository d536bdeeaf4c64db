"""The Inference Gateway's endpoint picker against real servers. On a control plane with the InferencePool
CRD (from the Go module sigs.k8s.io/gateway-api-inference-extension), the operator, as the chart's
ServiceAccount, renders the pool of the two-replica sample server; each of its two kwok pods gets a real
tiny `gemma-runtime serve` on its pod IP. The picker, built from the same module (tests/cluster/harness/
epp.py), runs with the README's Deployment args as the README's ServiceAccount (so its Role is proven
enough), reads every pod's /metrics, and, asked through ext_proc as Envoy would ask, routes each new
request away from the server with long generations in flight, both ways round. Every series its default
engine config reads, taken from its own source in the module, is on a live server's /metrics, and it
logs no failure to extract one."""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gemma_runtime import metric_names
from tests import readme
from tests.api_cases import sample
from tests.cluster.harness.binaries import ensure_binaries, module_download
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.crds import INFERENCE_POOL, crd_file, install_crd
from tests.cluster.harness.epp import EPP_VERSION, MODULE, EndpointPicker, EppBinaries, ensure_epp
from tests.cluster.harness.required import required
from tests.cluster.harness.runtime import RuntimeProcess, rendered_config
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.chart_operator import chart_operator

NAME = "tiny-pooled"  # the sample's server, and the README's pool
NS = "default"  # the README's namespace
PICKER = f"{NAME}-epp"
# The picker's default "vllm" engine config and its (deprecated) metric flags, in its own source.
SOURCES = (
    "pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go",
    "pkg/epp/server/options.go",
)


@dataclasses.dataclass
class Gateway:
    cluster: LocalCluster
    picker: EndpointPicker
    servers: dict[str, RuntimeProcess]  # pod name -> the runtime on its IP
    port: int
    model: str

    def endpoint(self, pod: str) -> str:
        return f"{self.servers[pod].config['host']}:{self.port}"


def _parts() -> tuple[Path, EppBinaries]:
    crd_file(INFERENCE_POOL)
    return ensure_binaries(), ensure_epp()


@pytest.fixture(scope="module")
def parts() -> tuple[Path, EppBinaries]:
    return required("control plane, InferencePool CRD or endpoint picker", _parts)


def _running_pods(cluster: LocalCluster) -> dict[str, str] | None:
    """Pod name -> IP of the server's two pods, once both run."""
    pods = json.loads(cluster.kubectl("-n", NS, "get", "pods", "-l", f"gemma.ai/server={NAME}", "-o", "json"))
    running = {
        p["metadata"]["name"]: p["status"]["podIP"]
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and p["status"].get("podIP")
    }
    return running if len(running) == 2 else None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _picker_account(cluster: LocalCluster, workdir: Path) -> tuple[Path, list[str]]:
    """The README's picker objects applied as written; a kubeconfig with its ServiceAccount's token, and
    the args of its Deployment."""
    docs = readme.yaml_documents("kind: RoleBinding")
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    cluster.kubectl("apply", "--server-side", "--field-manager=gemma-tests", "-f", "-", input_text=listing)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    token = cluster.kubectl("-n", NS, "create", "token", PICKER, "--duration=1h").strip()
    user = f"system:serviceaccount:{NS}:{PICKER}"
    return cluster.write_kubeconfig(workdir / "epp.kubeconfig", user, token, namespace=NS), container["args"]


def _queues(picker: EndpointPicker) -> dict[str, float]:
    """Pod name -> the queue the picker last scraped from it (its own inference_pool_per_pod_queue_size)."""
    families = text_string_to_metric_families(picker.metrics() or "")
    return {
        s.labels["model_server_pod"].rsplit("-rank-", 1)[0]: s.value
        for f in families
        if f.name == "inference_pool_per_pod_queue_size"
        for s in f.samples
    }


@pytest.fixture(scope="module")
def gateway(parts: tuple[Path, EppBinaries]) -> Iterator[Gateway]:
    bin_dir, binaries = parts
    servers: dict[str, RuntimeProcess] = {}
    with (
        tempfile.TemporaryDirectory(prefix="gemma-epp-test-") as work,
        LocalCluster(bin_dir=bin_dir) as cluster,
        chart_operator(cluster),
    ):
        install_crd(cluster, INFERENCE_POOL)
        cluster.kubectl(
            "-n", NS, "apply", "-f", "-", input_text=json.dumps(sample("server-tiny-inference-pool"))
        )
        pods = wait_for(lambda: _running_pods(cluster), 120, "the server's two running pods")
        wait_for(
            lambda: cluster.kubectl("-n", NS, "get", "inferencepools", NAME, "--ignore-not-found"),
            60,
            "the InferencePool",
        )
        config = rendered_config(cluster, f"gemma.ai/server={NAME}", NS)
        try:
            for pod, ip in pods.items():
                servers[pod] = RuntimeProcess("serve", {**config, "host": ip}, Path(work))
            for runtime in servers.values():
                url = f"http://{runtime.config['host']}:{config['port']}"
                wait_for(partial(_ready, url), 240, f"the runtime on {url} to be ready", interval=1)
            kubeconfig, args = _picker_account(cluster, Path(work))
            with EndpointPicker(binaries, kubeconfig, args, Path(work)) as picker:
                wait_for(lambda: set(_queues(picker)) == set(pods), 60, "the picker to scrape both pods")
                yield Gateway(cluster, picker, servers, config["port"], config["served_model_name"])
                log = picker.log.read_text(errors="replace")
                assert "forbidden" not in log.lower(), picker.tail()
        finally:
            for runtime in servers.values():
                runtime.stop()


def _load(url: str, model: str, requests: int) -> list[threading.Thread]:
    """``requests`` long completions in flight on one server: its slots full, the rest queued."""
    body = json.dumps(
        {"model": model, "prompt": "Keep talking", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
    ).encode()

    def complete() -> None:
        request = urllib.request.Request(
            f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()

    threads = [threading.Thread(target=complete, daemon=True) for _ in range(requests)]
    for thread in threads:
        thread.start()
    return threads


def test_the_picker_routes_each_request_to_the_less_loaded_server(gateway: Gateway) -> None:
    for busy, idle in (sorted(gateway.servers), sorted(gateway.servers)[::-1]):
        runtime = gateway.servers[busy]
        threads = _load(f"http://{gateway.endpoint(busy)}", gateway.model, requests=32)

        # What the picker saw: requests queued on the busy server, none on the other.
        def seen(busy: str = busy, idle: str = idle) -> bool:
            queues = _queues(gateway.picker)
            return queues.get(busy, 0) > 0 and queues.get(idle) == 0

        wait_for(seen, 60, f"the picker to see the load on {busy}", interval=0.05)
        picks = [gateway.picker.pick(gateway.model, f"Question {i} for {idle}?") for i in range(3)]
        queues = _queues(gateway.picker)
        assert picks == [gateway.endpoint(idle)] * 3, (busy, picks, queues)
        assert queues[busy] > 0  # still loaded after the last pick: no pick was a tie between idle servers
        for thread in threads:
            thread.join(timeout=600)
        assert runtime.running()
        wait_for(partial(_drained, gateway.picker, busy), 60, f"{busy} to drain")


def _drained(picker: EndpointPicker, pod: str) -> bool:
    return _queues(picker).get(pod) == 0


def _picker_reads() -> set[str]:
    """The metric families the picker's default vLLM engine config and its metric flags name."""
    with tempfile.TemporaryDirectory(prefix="gemma-epp-src-") as work:
        source = Path(module_download(MODULE, EPP_VERSION, Path(work))["Dir"])
        factories, options = ((source / path).read_text() for path in SOURCES)
    vllm = re.search(r'Name:\s+"vllm",(.*?)\n\t},', factories, flags=re.DOTALL)
    assert vllm is not None, "no vllm engine config in the picker's source"
    specs = re.findall(r'Spec:\s+"([^"]+)"', vllm.group(1))
    specs += re.findall(r'Metric:\s+"(vllm:[^"]+)"', options)
    return {spec.split("{")[0] for spec in specs}


def test_every_metric_the_picker_reads_is_on_a_live_servers_metrics(gateway: Gateway) -> None:
    reads = _picker_reads()
    assert reads == set(metric_names.INFERENCE_GATEWAY)  # our contract is exactly what it reads
    for pod in gateway.servers:
        with urllib.request.urlopen(f"http://{gateway.endpoint(pod)}/metrics", timeout=10) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        assert all(families.get(name) and families[name].samples for name in reads), (reads, sorted(families))
    # The picker found each of them on every scrape: an extraction that failed is logged once.
    assert "extract failed" not in gateway.picker.log.read_text(errors="replace"), gateway.picker.tail()
