"""Every part the cluster tier builds from Go modules or copies out of them, in one list: `make
cluster-binaries` builds them all, and a test session that selects cluster tests builds them before its
first test. A cold build takes about 20 minutes on two cores, longer on a busy machine; inside a fixture
it would count against the first test's timeout and fail every test of the session. A test session
builds them in a process of its own at low CPU priority (`Background`) while its tests that need no part
run, and waits for it before the first test that does."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.cluster.harness.binaries import BuildError, Log, _stderr, ensure_binaries
from tests.cluster.harness.control_plane import _die_with_parent
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


class Background:
    """`python -m tests.cluster.harness binaries` (every part above) under ``nice``: the CPU the tests
    leave idle builds the parts, the tests themselves barely slow down. Its log lines wait in a queue
    until ``wait`` prints them, so they do not cut through the progress of the tests running meanwhile.
    It runs in a process group of its own, so ``stop`` ends the ``go`` processes it started too."""

    def __init__(self, command: list[str] | None = None) -> None:
        root = Path(__file__).resolve().parents[3]
        build = ["nice", "-n", "15", sys.executable, "-m", "tests.cluster.harness", "binaries"]
        self.started = time.monotonic()
        self._process = subprocess.Popen(
            command or build,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="cluster-binaries", daemon=True)
        self._reader.start()
        self._done = False

    def _read(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait(self, log: Log) -> None:
        """Print the build's lines so far, then each as it comes, until it ends (once)."""
        if self._done:
            return
        self._done = True
        log(f"[cluster-binaries] the build started {time.monotonic() - self.started:.0f} s ago; its log:")
        while (line := self._lines.get()) is not None:
            log(line)
        self._reader.join()
        self.stop()

    def stop(self) -> None:
        """End the build if it still runs (SIGTERM to its group, SIGKILL after 10 s), then its reader."""
        if self._process.poll() is None:
            for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, sig)
                try:
                    self._process.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reader.join(timeout=30)  # the pipe ends once every process of the group is gone
        if self._process.stderr is not None and not self._reader.is_alive():
            self._process.stderr.close()
