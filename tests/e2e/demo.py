"""`make kind-demo`: the demo with real pods on kind (needs Docker). Builds both images, creates a kind
cluster, `helm install`s the chart, applies the tiny CPU server and the tiny training, shows `kubectl get
gemma` converging and the pods, asks the server for a completion through its Service, follows the
training to Succeeded, and deletes the cluster (also on Ctrl-C)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.conftest import docker_unavailable_reason

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def main() -> int:
    reason = docker_unavailable_reason()
    if reason:
        print(f"make kind-demo needs Docker ({reason.removeprefix('kind e2e skipped: ')})", file=sys.stderr)
        return 2
    from tests.cluster.chart.helm import Helm
    from tests.cluster.harness.demo import banner, watch
    from tests.e2e import kind

    def converge(kind_name: str, name: str, phase: str, timeout: float) -> None:
        if not watch(cluster.kubectl, [(kind_name, name, phase)], timeout, interval=3):
            raise SystemExit(f"kind-demo: {kind_name} {name} not {phase} after {timeout:.0f} s")

    workdir = Path(tempfile.mkdtemp(prefix="gemma-kind-demo-"))
    cluster = kind.create("gemma-demo", workdir, kind.tool("kubectl"))
    try:
        banner("building both images and loading them into kind")
        kind.build_and_load(cluster)
        banner("helm install gemma-operator charts/gemma-operator")
        helm = Helm(kind.tool("helm"), workdir / "helm", kubeconfig=cluster.kubeconfig_path)
        kind.install_chart(helm, "operator.resyncSeconds=10", "operator.progressSeconds=5")
        banner("kubectl apply the tiny CPU server and the tiny training")
        for sample in ("server-tiny-cpu.yaml", "training-tiny-cpu.yaml"):
            print(cluster.kubectl("apply", "-f", str(SAMPLES / sample)), flush=True)
        converge("GemmaServer", "tiny", "Ready", timeout=900)
        print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
        banner("a completion through the Service (kubectl port-forward service/tiny)")
        with cluster.port_forward("service/tiny", 8000) as port:
            body = json.dumps({"model": "tiny", "prompt": "The weather", "max_tokens": 16}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                print(json.dumps(json.loads(response.read()), indent=2), flush=True)
        banner("the tiny training, until Succeeded")
        converge("GemmaTraining", "tiny-train", "Succeeded", timeout=1800)
        status = json.loads(cluster.kubectl("get", "gemmatraining", "tiny-train", "-o", "json"))["status"]
        print(json.dumps({k: status.get(k) for k in ("phase", "progress", "lastCheckpoint")}, indent=2))
        return 0
    except KeyboardInterrupt:
        banner("interrupted")
        return 130
    finally:
        banner("deleting the kind cluster")
        cluster.delete()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
