"""`make kind-demo`: the demo with real pods on kind (needs Docker). Builds both images, creates a kind
cluster, `helm install`s the chart, applies the tiny CPU server and the tiny training, shows `kubectl get
gemma` converging and the pods, asks the server for a completion through its Service, follows the
training to Succeeded, and deletes the cluster (also on Ctrl-C)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import docker_unavailable_reason

if TYPE_CHECKING:
    from pytest_kind import KindCluster  # type: ignore[import-untyped]

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _watch(cluster: KindCluster, until: dict[str, str], timeout: float) -> None:
    """Print `kubectl get gemma` when it changes until every name reaches its phase."""
    last, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = cluster.kubectl("get", "gemma")
        key = "\n".join(line.rsplit(None, 1)[0] for line in table.splitlines() if line.strip())
        if key != last:
            print(table, flush=True)
            last = key
        items = json.loads(cluster.kubectl("get", "gemma", "-o", "json"))["items"]
        phases = {o["metadata"]["name"]: o.get("status", {}).get("phase") for o in items}
        if all(phases.get(name) == phase for name, phase in until.items()):
            return
        time.sleep(3)
    raise SystemExit(f"kind-demo: not converged after {timeout:.0f} s: {until}")


def main() -> int:
    reason = docker_unavailable_reason()
    if reason:
        print(f"make kind-demo needs Docker ({reason.removeprefix('kind e2e skipped: ')})", file=sys.stderr)
        return 2
    from tests.cluster.chart.helm import Helm
    from tests.e2e import kind

    workdir = Path(tempfile.mkdtemp(prefix="gemma-kind-demo-"))
    cluster = kind.create("gemma-demo", workdir, kind.tool("kubectl"))
    try:
        _banner("building both images and loading them into kind")
        kind.build_and_load(cluster)
        _banner("helm install gemma-operator charts/gemma-operator")
        helm = Helm(kind.tool("helm"), workdir / "helm", kubeconfig=cluster.kubeconfig_path)
        kind.install_chart(helm, "operator.resyncSeconds=10", "operator.progressSeconds=5")
        _banner("kubectl apply the tiny CPU server and the tiny training")
        for sample in ("server-tiny-cpu.yaml", "training-tiny-cpu.yaml"):
            print(cluster.kubectl("apply", "-f", str(SAMPLES / sample)), flush=True)
        _watch(cluster, {"tiny": "Ready"}, timeout=900)
        print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
        _banner("a completion through the Service (kubectl port-forward service/tiny)")
        with cluster.port_forward("service/tiny", 8000) as port:
            body = json.dumps({"model": "tiny", "prompt": "The weather", "max_tokens": 16}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                print(json.dumps(json.loads(response.read()), indent=2), flush=True)
        _banner("the tiny training, until Succeeded")
        _watch(cluster, {"tiny-train": "Succeeded"}, timeout=1800)
        status = json.loads(cluster.kubectl("get", "gemmatraining", "tiny-train", "-o", "json"))["status"]
        print(json.dumps({k: status.get(k) for k in ("phase", "progress", "lastCheckpoint")}, indent=2))
        return 0
    except KeyboardInterrupt:
        _banner("interrupted")
        return 130
    finally:
        _banner("deleting the kind cluster")
        cluster.delete()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
