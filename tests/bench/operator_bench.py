"""Operator benchmark on the real control plane: time from creating a GemmaServer to its children
applied and to status Ready (p50/p99 over N servers, and how long after its pods turned Ready), and the
operator's memory with M GemmaServers. Reported, never asserted.

usage: python -m tests.bench.operator_bench [--servers 200] [--total 1000] [--output bench/operator.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from tests.api_cases import REPO, merge, sample
from tests.bench import results
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.nodes import DEFAULT_POOLS, NodePool
from tests.cluster.harness.operator import OperatorProcess

BENCH_POOL = NodePool(name="bench", hosts=3, machine_type="n2-standard-224", cpu="1000", memory="4000Gi")
NAMESPACE = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Watcher(threading.Thread):
    """Records when each server's Deployment appears, its pods turn Ready, and it reports Ready."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.children: dict[str, float] = {}
        self.pods_ready: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._deployments, daemon=True),
            threading.Thread(target=self._pods, daemon=True),
            threading.Thread(target=self._servers, daemon=True),
        ]
        for t in threads:
            t.start()
        self.stop.wait()

    def _stream(self, func: Any, **kwargs: Any) -> Any:
        while not self.stop.is_set():
            try:
                yield from watch.Watch().stream(func, NAMESPACE, timeout_seconds=30, **kwargs)
            except Exception:  # the cluster is stopping, or a watch broke: start another
                if self.stop.is_set():
                    return
                time.sleep(0.5)

    def _deployments(self) -> None:
        for event in self._stream(client.AppsV1Api(self.api).list_namespaced_deployment):
            self.children.setdefault(event["object"].metadata.name, time.monotonic())

    def _pods(self) -> None:
        for event in self._stream(client.CoreV1Api(self.api).list_namespaced_pod):
            pod = event["object"]
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            server = (pod.metadata.labels or {}).get("gemma.ai/server")
            if ready and server:
                self.pods_ready.setdefault(server, time.monotonic())

    def _servers(self) -> None:
        listing = functools.partial(
            client.CustomObjectsApi(self.api).list_namespaced_custom_object, "gemma.ai", "v1alpha1"
        )
        for event in self._stream(listing, plural="gemmaservers"):
            obj = event["object"]
            if obj.get("status", {}).get("phase") in ("Ready", "Suspended"):
                self.ready.setdefault(obj["metadata"]["name"], time.monotonic())


def run(servers: int, total: int) -> dict[str, Any]:
    with LocalCluster(pools=(*DEFAULT_POOLS, BENCH_POOL)) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/gemmaservers.gemma.ai")
        cluster.kubectl("create", "namespace", NAMESPACE)
        operator = OperatorProcess(cluster, resync_seconds=300)
        operator.start()
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        custom = client.CustomObjectsApi(api)
        watcher = Watcher(api)
        watcher.start()
        time.sleep(1)
        base = merge(
            sample("server-tiny-cpu"),
            {"spec": {"pod": {"nodeSelector": {"cloud.google.com/gke-nodepool": "bench"}}}},
        )
        created: dict[str, float] = {}
        started = time.monotonic()
        for i in range(servers):
            body = merge(base, {"metadata": {"name": f"bench-{i:04d}"}})
            created[body["metadata"]["name"]] = time.monotonic()
            custom.create_namespaced_custom_object("gemma.ai", "v1alpha1", NAMESPACE, "gemmaservers", body)
        deadline = time.monotonic() + 900
        while len([n for n in created if n in watcher.ready]) < servers and time.monotonic() < deadline:
            time.sleep(0.5)
            if int(time.monotonic() * 2) % 20 == 0:
                print(
                    f"[bench] {len(watcher.children)} with children, {len(watcher.ready)} ready", flush=True
                )
        elapsed = time.monotonic() - started
        rss_at_servers = operator.rss_mib()
        to_children = [watcher.children[n] - t for n, t in created.items() if n in watcher.children]
        to_ready = [watcher.ready[n] - t for n, t in created.items() if n in watcher.ready]
        after_pods = [
            watcher.ready[n] - watcher.pods_ready[n]
            for n in created
            if n in watcher.ready and n in watcher.pods_ready
        ]

        for i in range(servers, total):  # suspended: the operator's own cost, without a pod each
            body = merge(base, {"metadata": {"name": f"bench-{i:04d}"}, "spec": {"suspend": True}})
            custom.create_namespaced_custom_object("gemma.ai", "v1alpha1", NAMESPACE, "gemmaservers", body)
        deadline = time.monotonic() + 900
        while len(watcher.ready) < total and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(10)  # let the last status writes and watch caches settle
        rss_at_total = operator.rss_mib()
        watcher.stop.set()
        operator.stop()
        return {
            "servers": servers,
            "total": total,
            "all_ready_seconds": round(elapsed, 2),
            "created_to_children_seconds": _summary(to_children),
            "created_to_ready_seconds": _summary(to_ready),
            "pods_ready_to_status_ready_seconds": _summary(after_pods),
            "operator_rss_mib": {str(servers): round(rss_at_servers, 1), str(total): round(rss_at_total, 1)},
            "reached_ready": len(to_ready),
            "reached_total": len(watcher.ready),
        }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(_percentile(values, 50), 3),
        "p99": round(_percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.operator_bench")
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--total", type=int, default=1000)
    parser.add_argument("--output", default="bench/operator.json")
    args = parser.parse_args(argv)
    result = run(args.servers, args.total)
    print(json.dumps(result, indent=2))
    results.write(result, Path(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
