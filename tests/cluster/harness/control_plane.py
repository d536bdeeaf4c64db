"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, each a child process on free ports in one temporary folder.

Every child is started in its own session with a parent-death signal, so none outlives this process,
even when it is killed; ``stop()`` (also on ``with`` exit, Ctrl-C and interpreter exit) terminates them.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness import certs
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.nodes import DEFAULT_POOLS, NodePool

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "127.64.0.0/16"  # inside loopback, so a test can serve a fake pod's ports on its pod IP
ADMIN_USER = "gemma-test-admin"
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str] | None, grace: float = 10) -> None:
    """SIGTERM a child that is still running, SIGKILL it after ``grace`` seconds, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StartError(RuntimeError):
    """A component did not become ready; the message carries the end of its log."""


@dataclasses.dataclass
class Component:
    name: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def rss_mib(self) -> float:
        if self.process is None:
            return 0.0
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalCluster:
    """Start with ``with LocalCluster() as cluster:``; ``cluster.kubeconfig`` is an admin kubeconfig."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        pools: tuple[NodePool, ...] = DEFAULT_POOLS,
        log: Callable[[str], None] | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        """``address``: where the API server listens and what it advertises; loopback unless real pods
        must reach it (a real node's address, see ``real_node``)."""
        self.bin_dir = bin_dir
        self.address = address
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gemma-cluster-"))
        self.pools = pools
        self.components: list[Component] = []
        self.timings: dict[str, float] = {}
        self.admin_token = os.urandom(16).hex()
        self.apiserver_port = 0
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._ssl = ssl.create_default_context()

    # -- paths and credentials --------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def binary(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def write_kubeconfig(self, path: Path, user: str, token: str, namespace: str = "default") -> Path:
        """A kubeconfig for ``user`` authenticating with a bearer ``token``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "gemma-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "gemma-test",
                    "context": {"cluster": "gemma-test", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "gemma-test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        started = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = ensure_binaries(log=self._log)
        self.timings["binaries"] = time.monotonic() - started
        atexit.register(self.stop)
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):
            # Turn SIGTERM into an exception so `with` blocks and fixtures tear down.
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = certs.write_pki(self.workdir / "pki", SERVICE_IP, (self.address,))
        kubelet_client = certs.write_client_cert(
            self.workdir / "pki",
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            ("system:masters",),
        )
        deadline = started + timeout

        step = time.monotonic()
        etcd_port = free_port()
        self._spawn(
            "etcd",
            [
                self.binary("etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"http://127.0.0.1:{etcd_port}/health"), deadline)
        self.timings["etcd"] = time.monotonic() - step

        step = time.monotonic()
        self.apiserver_port = free_port()
        tokens = self.workdir / "tokens.csv"
        self._kcm_token, self._sched_token = os.urandom(16).hex(), os.urandom(16).hex()
        tokens.write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self._kcm_token},system:kube-controller-manager,uid-kcm\n"
            f"{self._sched_token},system:kube-scheduler,uid-scheduler\n"
        )
        tokens.chmod(0o600)
        self._spawn(
            "kube-apiserver",
            [
                self.binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki['apiserver.crt']}",
                f"--tls-private-key-file={pki['apiserver.key']}",
                f"--client-ca-file={pki['ca.crt']}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                "--kubelet-preferred-address-types=InternalIP",  # node names resolve nowhere
                f"--service-account-issuer=https://{self.address}:{self.apiserver_port}",
                f"--service-account-key-file={pki['sa.pub']}",
                f"--service-account-signing-key-file={pki['sa.key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # The `kubernetes` Service gets an endpoint only where pods can reach it (not loopback).
                f"--endpoint-reconciler-type={'none' if self.address.startswith('127.') else 'lease'}",
                "--profiling=false",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--v=0",
            ],
        )
        self.write_kubeconfig(self.kubeconfig, ADMIN_USER, self.admin_token)
        self._wait("kube-apiserver", self._apiserver_ready, deadline)
        self.timings["kube-apiserver"] = time.monotonic() - step

        step = time.monotonic()
        kcm_config = self.write_kubeconfig(
            self.workdir / "kcm.kubeconfig", "system:kube-controller-manager", self._kcm_token
        )
        self._spawn(
            "kube-controller-manager",
            [
                self.binary("kube-controller-manager"),
                f"--kubeconfig={kcm_config}",
                "--leader-elect=false",
                "--controllers=*",
                "--secure-port=0",
                f"--service-account-private-key-file={pki['sa.key']}",
                f"--root-ca-file={pki['ca.crt']}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )
        sched_config = self.write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", "system:kube-scheduler", self._sched_token
        )
        sched_yaml = self.workdir / "scheduler.yaml"
        sched_yaml.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(sched_config)},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self._spawn(
            "kube-scheduler",
            [self.binary("kube-scheduler"), f"--config={sched_yaml}", "--secure-port=0", "--v=0"],
        )
        kwok_port = free_port()
        self._spawn(
            "kwok",
            [
                self.binary("kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{kwok_port}",
            ],
        )
        # The controller manager is working once the service-account controller made `default/default`.
        self._wait("kube-controller-manager", self._default_service_account_exists, deadline)
        self._wait("kwok", lambda: self._http_ok(f"http://127.0.0.1:{kwok_port}/healthz"), deadline)
        self.timings["controllers"] = time.monotonic() - step

        step = time.monotonic()
        self.create_node_pools(self.pools)
        self._wait("nodes", self._nodes_ready, deadline)
        self.timings["nodes"] = time.monotonic() - step
        self.timings["total"] = time.monotonic() - started

    def stop(self) -> None:
        for component in reversed(self.components):
            proc = component.process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for component in reversed(self.components):
            proc = component.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.components.clear()
        atexit.unregister(self.stop)
        if self._own_workdir and os.environ.get("GEMMA_KEEP_CLUSTER_DIR") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------------

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of every component, in MiB."""
        return {c.name: round(c.rss_mib(), 1) for c in self.components}

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.components if c.process is not None]

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        result = subprocess.run(
            [self.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """A raw API call with the admin (or the given) bearer token; returns parsed JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def create_node_pools(self, pools: tuple[NodePool, ...]) -> None:
        for pool in pools:
            for node in pool.nodes():
                # A plain create keeps status (capacity); server-side apply would drop it.
                self.request("POST", "/api/v1/nodes", node)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.components.append(Component(name, args, log, self._popen(args, log, "wb")))

    def _popen(self, args: list[str], log: Path, mode: str) -> subprocess.Popen[bytes]:
        with log.open(mode) as out:
            return subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
                cwd=self.workdir,
            )

    # -- chaos: a component restarted in place ----------------------------------------------------

    def restart(
        self,
        name: str,
        *,
        kill: bool = False,
        down: float = 0.0,
        while_down: Callable[[], object] | None = None,
        flags: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Stop one component (SIGTERM, or SIGKILL with ``kill``), keep it down ``down`` seconds (calling
        ``while_down``), and start it again with the same arguments, as a restarted static pod would: the
        same ports and data folder; ``flags`` (``{"--flag": "value"}``) replace or add arguments from now
        on. Returns once it is ready again; its log continues in the same file."""
        component = self._component(name)
        if component is None or component.process is None:
            raise ValueError(f"no running component {name}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            component.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # the API server drains watches for up to a minute
            os.killpg(component.process.pid, signal.SIGKILL)
            component.process.wait(timeout=10)
        time.sleep(down)
        if while_down is not None:
            while_down()
        for flag, value in (flags or {}).items():
            component.args = [a for a in component.args if not a.startswith(f"{flag}=")] + [f"{flag}={value}"]
        with component.log.open("ab") as out:
            out.write(f"\n===== restarted by the test ({'SIGKILL' if kill else 'SIGTERM'}) =====\n".encode())
        component.process = self._popen(component.args, component.log, "ab")
        ready = {"etcd": self._etcd_healthy, "kube-apiserver": self._apiserver_ready}.get(name, lambda: True)
        self._wait(name, ready, time.monotonic() + timeout)

    @property
    def etcd_url(self) -> str:
        etcd = self._component("etcd")
        assert etcd is not None
        flag = "--advertise-client-urls="
        return next(a.removeprefix(flag) for a in etcd.args if a.startswith(flag))

    def _etcd_healthy(self) -> bool:
        return self._http_ok(f"{self.etcd_url}/health")

    def _etcd(self, method: str, body: dict[str, Any]) -> Any:
        """etcd's v3 JSON gateway (no etcdctl needed)."""
        req = urllib.request.Request(f"{self.etcd_url}/v3/{method}", data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision and return it: a watch that resumes from
        any older resourceVersion can then only be answered 410 Gone."""
        revision = int(self._etcd("kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        self._etcd("kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while True:
            for component in self.components:
                if component.process is not None and component.process.poll() is not None:
                    raise StartError(
                        f"{component.name} exited with {component.process.returncode} while waiting for "
                        f"{what}; log {component.log}:\n{component.log_tail()}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                comp = self._component(what)
                tail = comp.log_tail() if comp else ""
                raise StartError(f"{what} not ready in time; see {self.workdir / 'logs'}\n{tail}")
            time.sleep(0.2)

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _get_or_none(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except (urllib.error.URLError, OSError, json.JSONDecodeError):
            return None

    def _apiserver_ready(self) -> bool:
        # /readyz answers 403 while the RBAC bootstrap is running; a real 200 and `default` mean done.
        try:
            req = urllib.request.Request(self.server + "/readyz")
            req.add_header("Authorization", f"Bearer {self.admin_token}")
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        return self._get_or_none("/api/v1/namespaces/default") is not None

    def _default_service_account_exists(self) -> bool:
        return self._get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None

    def _nodes_ready(self) -> bool:
        nodes = self._get_or_none("/api/v1/nodes")
        if not nodes:
            return False
        expected = sum(pool.hosts for pool in self.pools)
        ready = [
            n
            for n in nodes["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        ]
        return len(ready) >= expected


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
