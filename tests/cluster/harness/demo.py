"""`make demo`: the local control plane with fake GKE TPU and CPU node pools, the CRDs, and the real
operator process; then manifests/gemma-server.yaml, the tiny CPU server and a tiny training, converging
live in `kubectl get gemma`. Later issues add a real `gemma-runtime serve` answering a completion and a
real `gemma-runtime train` reporting progress."""

from __future__ import annotations

import json
import time

from tests.api_cases import REPO, load, merge, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess

POOL_COLUMNS = ",".join(
    [
        "cloud.google.com/gke-nodepool",
        "cloud.google.com/gke-tpu-accelerator",
        "cloud.google.com/gke-tpu-topology",
        "node.kubernetes.io/instance-type",
    ]
)


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _watch(cluster: LocalCluster, done: list[tuple[str, str, str]], timeout: float = 120) -> None:
    """Print `kubectl get gemma` whenever it changes, until each (kind, name) reaches its phase."""
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = cluster.kubectl("get", "gemma")
        if table != last:
            print(table, flush=True)
            last = table
        phases = {
            (o["kind"], o["metadata"]["name"]): o.get("status", {}).get("phase")
            for o in json.loads(cluster.kubectl("get", "gemma", "-o", "json"))["items"]
        }
        if all(phases.get((kind, name)) == phase for kind, name, phase in done):
            return
        time.sleep(1)


def run() -> int:
    with LocalCluster() as cluster:
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
        _banner(f"control plane ready ({timings})")
        print(cluster.kubectl("get", "nodes", "-L", POOL_COLUMNS), flush=True)

        _banner("CRDs and the operator (gemma-operator run)")
        print(cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds")), flush=True)
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/gemmaservers.gemma.ai", "crd/gemmatrainings.gemma.ai"
        )
        operator = OperatorProcess(cluster)
        operator.start()
        print(f"operator healthy; its log: {operator.log}", flush=True)
        try:
            _banner("kubectl apply -f manifests/gemma-server.yaml, the tiny CPU server and a tiny training")
            cluster.kubectl("create", "secret", "generic", "hf-token", "--from-literal=token=hf_demo")
            training = merge(
                sample("training-tiny-cpu"),
                {"spec": {"pod": {"annotations": {"kwok.gemma.ai/succeed-after": "20s"}}}},
            )
            docs = [load(REPO / "manifests" / "gemma-server.yaml"), sample("server-tiny-cpu"), training]
            print(
                cluster.kubectl("apply", "-f", "-", input_text="\n---\n".join(json.dumps(d) for d in docs)),
                flush=True,
            )
            _watch(
                cluster,
                [
                    ("GemmaServer", "gemma2-9b-it", "Ready"),
                    ("GemmaServer", "tiny", "Ready"),
                    ("GemmaTraining", "tiny-train", "Succeeded"),
                ],
            )
            _banner("pods on the fake GKE node pools")
            print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
            _banner("status of gemma2-9b-it")
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
            memory = cluster.memory_mib()
            _banner(
                f"memory: control plane {sum(memory.values()):.0f} MiB, operator {operator.rss_mib():.0f} MiB"
            )
        finally:
            operator.stop()
    _banner("stopped; no processes left behind")
    return 0
