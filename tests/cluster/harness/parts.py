"""Every part the cluster tier builds from Go modules or copies out of them, in one list: `make
cluster-binaries` builds them all, and a test session that selects cluster tests builds them before its
first test. A cold build takes about 20 minutes on two cores, longer on a busy machine; inside a fixture
it would count against the first test's timeout and fail every test of the session."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.cluster.harness.binaries import BuildError, Log, _stderr, ensure_binaries
from tests.cluster.harness.crds import INFERENCE_POOL, SERVICE_MONITOR, crd_file
from tests.cluster.harness.epp import ensure_epp
from tests.cluster.harness.gcs import ensure_fake_gcs
from tests.cluster.harness.gcsfuse import ensure_gcsfuse
from tests.cluster.harness.jobset import ensure_jobset
from tests.cluster.harness.node_binaries import ensure_node_binaries

# (what, build): each build returns the cached path, building only what is missing.
PARTS: list[tuple[str, Callable[[], object]]] = [
    ("control plane (etcd, kube-*, kubectl, kwok, helm)", ensure_binaries),
    ("Cloud Storage emulator", ensure_fake_gcs),
    ("Cloud Storage FUSE", ensure_gcsfuse),
    ("JobSet controller", ensure_jobset),
    ("real node (kubelet, kube-proxy, CoreDNS)", ensure_node_binaries),
    ("endpoint picker and ext_proc client", lambda: ensure_epp().epp),
    ("ServiceMonitor CRD", lambda: crd_file(SERVICE_MONITOR)),
    ("InferencePool CRD", lambda: crd_file(INFERENCE_POOL)),
]


def build_all(log: Log = _stderr) -> dict[str, str]:
    """Find or build every part; returns what could not be built and why (the tests that need a part
    report it through ``required``: a skip, or a failure in CI)."""
    failed: dict[str, str] = {}
    started = time.monotonic()
    for what, build in PARTS:
        try:
            log(f"[cluster-binaries] {what}: {build()}")
        except BuildError as err:
            failed[what] = str(err)
            log(f"[cluster-binaries] {what}: cannot be built: {err}")
    log(f"[cluster-binaries] ready in {time.monotonic() - started:.1f} s")
    return failed
