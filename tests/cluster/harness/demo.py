"""`make demo`: the local control plane with fake GKE TPU and CPU node pools, the CRDs, and the real
operator process; then manifests/gemma-server.yaml, the tiny CPU server and a tiny training, converging
live in `kubectl get gemma`. The tiny server's pod gets a real `gemma-runtime serve` on its IP, which
answers a completion through the OpenAI-compatible API at the end; the tiny training's pod gets a real
`gemma-runtime train`, whose progress the operator copies into `kubectl get gemmatrainings`; when it
exits, its pod ends with its exit code and final figures, as a kubelet would end it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemma_runtime.train.command import sample_data
from tests.api_cases import REPO, load, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess
from tests.cluster.harness.runtime import RuntimeProcess, end_pod, rendered_config
from tests.cluster.harness.wait import wait_for

POOL_COLUMNS = ",".join(
    [
        "cloud.google.com/gke-nodepool",
        "cloud.google.com/gke-tpu-accelerator",
        "cloud.google.com/gke-tpu-topology",
        "node.kubernetes.io/instance-type",
    ]
)


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _running_pod(cluster: LocalCluster, label: str) -> tuple[str, str]:
    """(name, IP) of a running pod labelled ``label``."""

    def probe() -> tuple[str, str] | None:
        pods = json.loads(cluster.kubectl("get", "pods", "-l", label, "-o", "json"))["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return (running[0]["metadata"]["name"], running[0]["status"]["podIP"]) if running else None

    return wait_for(probe, 120, f"a running pod labelled {label}")


def _start_runtimes(cluster: LocalCluster, workdir: Path, started: list[RuntimeProcess]) -> None:
    """Real runtimes for the tiny server's and the tiny training's pods (on their loopback pod IPs),
    added to ``started`` as each starts, so an interrupt in between still stops the first."""
    _, server_ip = _running_pod(cluster, "gemma.ai/server=tiny")
    serve = rendered_config(cluster, "gemma.ai/server=tiny")
    server = RuntimeProcess("serve", {**serve, "host": server_ip}, workdir)
    started.append(server)
    print(f"gemma-runtime serve on the tiny server's pod IP {server_ip}:{serve['port']} (log {server.log})")
    train_pod, train_ip = _running_pod(cluster, "gemma.ai/training=tiny-train")
    train = rendered_config(cluster, "gemma.ai/training=tiny-train")
    # The image's sample text and checkpoint folder, as paths of this machine.
    train["data"] = {**train["data"], "path": str(sample_data())}
    train["checkpoints"] = {**train["checkpoints"], "directory": str(workdir / "checkpoints")}
    trainer = RuntimeProcess("train", {**train, "host": train_ip}, workdir)
    started.append(trainer)
    print(f"gemma-runtime train on the tiny training's pod IP {train_ip}:{train['port']} (log {trainer.log})")
    # The kubelet's part: the pod ends when the process does, with its final figures.
    threading.Thread(
        target=_end_training_pod, args=(cluster, train_pod, trainer), name="end-train-pod", daemon=True
    ).start()


def _end_training_pod(cluster: LocalCluster, pod: str, trainer: RuntimeProcess) -> None:
    try:
        code = end_pod(cluster, "default", pod, trainer)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:  # the demo stopped first
        print(f"(the training's pod was not ended: {err})", flush=True)
        return
    print(f"gemma-runtime train exited with {code}: its pod {pod} ends with its final figures", flush=True)


def _complete(host: str, port: int, model: str) -> dict[str, Any]:
    body = json.dumps({"model": model, "prompt": "The weather in the morning", "max_tokens": 24}).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _ready(host: str, port: int) -> bool | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=5) as response:
            return response.status == 200 or None
    except OSError:
        return None


def watch(
    kubectl: Callable[..., str], done: list[tuple[str, str, str]], timeout: float = 240, interval: float = 1
) -> bool:
    """Print `kubectl get gemma` whenever it changes, until each (kind, name) reaches its phase; whether
    they all did within ``timeout``. Shared with `make kind-demo`."""
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = kubectl("get", "gemma")
        # Print when something but the AGE column changed.
        key = "\n".join(line.rsplit(None, 1)[0] for line in table.splitlines() if line.strip())
        if key != last:
            print(table, flush=True)
            last = key
        phases = {
            (o["kind"], o["metadata"]["name"]): o.get("status", {}).get("phase")
            for o in json.loads(kubectl("get", "gemma", "-o", "json"))["items"]
        }
        if all(phases.get((kind, name)) == phase for kind, name, phase in done):
            return True
        time.sleep(interval)
    return False


def run() -> int:
    """On real pods where a real node can run here; else the runtimes as processes on fake pods' IPs."""
    from tests.cluster.harness import demo_pods
    from tests.cluster.harness.real_node import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return demo_pods.run()
    print(f"(no real pods here: {reason}; the tiny server and training run as processes on fake pods' IPs)")
    return _run_simulated()


def _run_simulated() -> int:
    with LocalCluster() as cluster:
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
        banner(f"control plane ready ({timings})")
        print(cluster.kubectl("get", "nodes", "-L", POOL_COLUMNS), flush=True)

        banner("CRDs and the operator (gemma-operator run)")
        print(cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds")), flush=True)
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/gemmaservers.gemma.ai", "crd/gemmatrainings.gemma.ai"
        )
        operator = OperatorProcess(cluster)
        operator.start()
        runtimes: list[RuntimeProcess] = []
        workdir = Path(tempfile.mkdtemp(prefix="gemma-demo-"))
        print(f"operator healthy; its log: {operator.log}", flush=True)
        try:
            banner("kubectl apply -f manifests/gemma-server.yaml, the tiny CPU server and a tiny training")
            cluster.kubectl("create", "secret", "generic", "hf-token", "--from-literal=token=hf_demo")
            docs = [
                load(REPO / "manifests" / "gemma-server.yaml"),
                sample("server-tiny-cpu"),
                sample("training-tiny-cpu"),
            ]
            print(
                cluster.kubectl("apply", "-f", "-", input_text="\n---\n".join(json.dumps(d) for d in docs)),
                flush=True,
            )
            banner("real runtimes on the tiny pods' IPs")
            _start_runtimes(cluster, workdir, runtimes)
            watch(
                cluster.kubectl,
                [
                    ("GemmaServer", "gemma2-9b-it", "Ready"),
                    ("GemmaServer", "tiny", "Ready"),
                    ("GemmaTraining", "tiny-train", "Succeeded"),
                ],
            )
            banner("pods on the fake GKE node pools")
            print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
            banner("status of gemma2-9b-it")
            status = json.loads(cluster.kubectl("get", "gemmaserver", "gemma2-9b-it", "-o", "json"))["status"]
            print(
                json.dumps(
                    {k: status[k] for k in ("phase", "readyReplicas", "endpoint", "accelerator")}, indent=2
                )
            )
            print(
                cluster.kubectl("get", "events", "--field-selector", "involvedObject.kind=GemmaServer"),
                flush=True,
            )
            print(
                "(simulated: gemma2-9b-it's pods run on kwok's fake v5e pool, where no container\n"
                " starts; their init container's download and the runtime's readiness are kwok's\n"
                " stages, so the Events above report kwok's pod status, not a download that happened.\n"
                " Real containers: the real-pod tier of make test, on a kubelet node.)",
                flush=True,
            )
            banner("a completion from the real gemma-runtime serve (OpenAI-compatible API)")
            serve = runtimes[0].config  # the server starts first
            host = serve["host"]
            wait_for(lambda: _ready(host, serve["port"]), 180, "the tiny server's /readyz")
            answer = _complete(host, serve["port"], serve["served_model_name"])
            print(f"POST http://{host}:{serve['port']}/v1/completions -> {json.dumps(answer, indent=2)}")
            print("(random weights: the tiny preset is untrained, so the text is noise)", flush=True)
            banner("the tiny training's progress, from the real gemma-runtime train")
            print(cluster.kubectl("get", "gemmatrainings"), flush=True)
            status = json.loads(cluster.kubectl("get", "gemmatraining", "tiny-train", "-o", "json"))["status"]
            print(json.dumps({k: status.get(k) for k in ("phase", "progress", "lastCheckpoint")}, indent=2))
            memory = cluster.memory_mib()
            banner(
                f"memory: control plane {sum(memory.values()):.0f} MiB, operator {operator.rss_mib():.0f} MiB"
            )
        finally:
            for runtime in runtimes:
                runtime.stop()
            operator.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    banner("stopped; no processes left behind")
    return 0
