"""A cluster whose CPU workloads run as real containers: our images built here, the control plane
listening on the real node's address, the real node, and kwok's fake TPU and GPU pools beside it."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cluster.harness import images
from tests.cluster.harness.binaries import Log, _stderr, ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.node_binaries import ensure_node_binaries
from tests.cluster.harness.nodes import DEFAULT_POOLS, NodePool
from tests.cluster.harness.real_node import NODE_IP, RealNode, node_network

# Every fake pool but the CPU one: CPU pods must land on the real node.
FAKE_POOLS = tuple(pool for pool in DEFAULT_POOLS if pool.name != "cpu")
IMAGES = (images.OPERATOR_IMAGE, images.RUNTIME_IMAGE)


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
