"""A cluster whose CPU workloads run as real containers: our images built here, the control plane
listening on the real node's address, the real node, and kwok's fake TPU and GPU pools beside it."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cluster.chart.helm import Helm
from tests.cluster.harness import images
from tests.cluster.harness.binaries import Log, _stderr, ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.node_binaries import ensure_node_binaries
from tests.cluster.harness.nodes import DEFAULT_POOLS, NodePool
from tests.cluster.harness.real_node import NODE_IP, RealNode, node_network
from tests.unit.packaging.generate import CHART, NAMESPACE, RELEASE

# Every fake pool but the CPU one: CPU pods must land on the real node.
FAKE_POOLS = tuple(pool for pool in DEFAULT_POOLS if pool.name != "cpu")
IMAGES = (images.OPERATOR_IMAGE, images.RUNTIME_IMAGE)
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
# The node has the machine's two cores: every runtime pod asks for a slice of them.
RUNTIME_CPU, RUNTIME_MEMORY = "250m", "1Gi"


@dataclasses.dataclass
class RealCluster:
    cluster: LocalCluster
    node: RealNode
    docker: images.Docker
    timings: dict[str, float]


@contextlib.contextmanager
def real_cluster(log: Log = _stderr, pools: tuple[NodePool, ...] = FAKE_POOLS) -> Iterator[RealCluster]:
    """Build the images, start the control plane and the real node; stop all of it on exit."""
    started = time.monotonic()
    bin_dir, node_bin = ensure_binaries(log=log), ensure_node_binaries(log=log)
    with (
        tempfile.TemporaryDirectory(prefix="gemma-docker-") as work,
        images.docker_engine(Path(work), log) as docker,
    ):
        timings = {f"build {k}": v for k, v in images.build_all(docker, log).items()}

        def load(command: list[str]) -> None:
            images.export(docker, [images.PAUSE_IMAGE, *IMAGES], command)

        with (
            node_network(),
            LocalCluster(bin_dir=bin_dir, pools=pools, log=log, address=NODE_IP) as cluster,
            RealNode(cluster, node_bin, load, images.PAUSE_IMAGE, log) as node,
        ):
            timings.update({f"node {k}": v for k, v in node.timings.items()})
            timings["total"] = time.monotonic() - started
            yield RealCluster(cluster, node, docker, timings)


def install_operator(cluster: LocalCluster, helm: Helm) -> None:
    """`helm install` of the chart with our images into NAMESPACE, labelled to enforce the restricted Pod
    Security Standard; returns once the operator is Ready."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("label", "namespace", NAMESPACE, RESTRICTED)
    repository, _, tag = images.OPERATOR_IMAGE.rpartition(":")
    runtime_repository, _, runtime_tag = images.RUNTIME_IMAGE.rpartition(":")
    values = {
        "image.repository": repository, "image.tag": tag,
        "runtime.image.repository": runtime_repository, "runtime.image.tag": runtime_tag,
        "runtime.cpuRequest": RUNTIME_CPU, "runtime.memoryRequest": RUNTIME_MEMORY,
        "operator.resyncSeconds": "10", "operator.progressSeconds": "3",
    }  # fmt: skip
    flags = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    helm.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags, "--wait", "--timeout", "5m",
             timeout=360)  # fmt: skip
