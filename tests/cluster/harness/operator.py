"""Run `gemma-operator run` as a real process against a LocalCluster (as the chart's Deployment would),
on loopback ports, with its log in the cluster's folder; stop it, kill it, start it again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.cluster.harness.control_plane import LocalCluster, _die_with_parent, free_port


class OperatorProcess:
    def __init__(
        self,
        cluster: LocalCluster,
        kubeconfig: Path | None = None,
        resync_seconds: float = 5.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = dict(settings or {})  # extra GEMMA_OPERATOR_* variables
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.resync_seconds = resync_seconds
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log = cluster.workdir / "logs" / "gemma-operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "GEMMA_OPERATOR_BIND_ADDRESS": "127.0.0.1",
            "GEMMA_OPERATOR_HEALTH_PORT": str(self.health_port),
            "GEMMA_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "GEMMA_OPERATOR_RESYNC_SECONDS": str(self.resync_seconds),
            "GEMMA_OPERATOR_RUNTIME_IMAGE": "gemma-runtime:test",
            **self.settings,
        }
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("gemma-operator")),
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gemma-operator exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"gemma-operator not healthy in {timeout} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def rss_mib(self) -> float:
        if self.process is None:
            return 0.0
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def operator_trouble(log: Path, lines: int = 30) -> str:
    """The operator log's last lines that tell why it stopped acting: failed kopf tasks, requests that
    gave up, tracebacks, and the start markers between them (for a test's failure message)."""
    marks = ("has failed", "escalating", "will retry", "stopping the operator", "Traceback", "===== start")
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no operator log at {log})"
    found = [line[:300] for line in text if any(mark in line for mark in marks)]
    last = [line[:300] for line in text[-10:]]
    return (
        "operator log, trouble:\n"
        + "\n".join(found[-lines:])
        + "\noperator log, last lines:\n"
        + "\n".join(last)
    )


@contextlib.contextmanager
def as_service_account(
    cluster: LocalCluster, namespace: str, settings: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """The operator with the rights of the chart's ServiceAccount in ``namespace`` (installed already), so
    the chart's RBAC is exercised; after it stops, its log must hold no refusal by RBAC."""
    user = f"system:serviceaccount:{namespace}:gemma-operator"
    token = cluster.kubectl("-n", namespace, "create", "token", "gemma-operator", "--duration=2h")
    kubeconfig = cluster.write_kubeconfig(cluster.workdir / "operator.kubeconfig", user, token.strip())
    process = OperatorProcess(cluster, kubeconfig=kubeconfig, settings=settings)
    process.start()
    try:
        yield process
    finally:
        process.stop()
    log = process.log.read_text(errors="replace")
    assert f'User "{user}" cannot' not in log, log[-3000:]  # RBAC's refusal names the user
