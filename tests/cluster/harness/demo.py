"""`make demo`: the local control plane with fake GKE TPU node pools, and TPU-shaped workloads
scheduled onto them for real. Later issues add the operator, a GemmaServer and a GemmaTraining."""

from __future__ import annotations

import json
import time

from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.workloads import indexed_job, tpu_deployment

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


def run() -> int:
    with LocalCluster() as cluster:
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
        _banner(f"control plane ready ({timings})")
        print(cluster.kubectl("get", "nodes", "-L", POOL_COLUMNS), flush=True)

        _banner("a server that needs one 8-chip v5e host (2x4) and a training job on a v5e 4x4 slice")
        manifests = [
            tpu_deployment("server-v5e-2x4", "tpu-v5-lite-podslice", "2x4", 8),
            indexed_job(
                "train-v5e-4x4",
                "tpu-v5-lite-podslice",
                "4x4",
                hosts=4,
                chips=4,
                annotations={"kwok.gemma.ai/succeed-after": "5s"},
            ),
        ]
        print(
            cluster.kubectl("apply", "-f", "-", input_text="\n---\n".join(json.dumps(m) for m in manifests))
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job = json.loads(cluster.kubectl("get", "job", "train-v5e-4x4", "-o", "json"))
            if any(
                c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions", [])
            ):
                break
            time.sleep(1)
        print(cluster.kubectl("get", "pods", "-o", "wide"), flush=True)
        print(cluster.kubectl("get", "deployments,jobs"), flush=True)
        memory = cluster.memory_mib()
        _banner(f"control-plane memory: {sum(memory.values()):.0f} MiB ({memory})")
    _banner("stopped; no processes left behind")
    return 0
