"""A real node beside the fake pools: a kubelet with Debian's containerd and runc that runs real
containers from our images, a CNI bridge of the project's own (``gemma0``, 10.244.0.0/24, no route out),
kube-proxy for Service IPs, CoreDNS for cluster DNS (headless Services included), and a default
StorageClass whose claims bind to folders of this node.

The bridge's gateway is also the node's address: the API server listens there (pods reach it through
the ``kubernetes`` Service), and so does CoreDNS. Everything is stopped and unmounted by ``stop()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness import certs
from tests.cluster.harness.binaries import BuildError, Log, _stderr
from tests.cluster.harness.control_plane import Component, LocalCluster, StartError, free_port
from tests.cluster.harness.node_binaries import CNI_BIN_DIR, missing_packages

NODE_NAME = "gemma-real-0"
BRIDGE = "gemma0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
STORAGE_CLASS = "standard"
VOLUMES = 8  # pre-made volumes of STORAGE_CLASS, each a folder of this node
VOLUME_SIZE = "10Gi"
NODE_LABELS = {"cloud.google.com/gke-nodepool": "real-cpu", "gemma.ai/real-node": "true"}

COREDNS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "gemma:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "gemma:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "gemma:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "gemma:coredns"}]
"""


def unavailable_reason() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, a bridge, iptables)"
    missing = missing_packages()
    if missing:
        return f"a real node needs Debian's {', '.join(missing)} (make node-deps installs them)"
    return None


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise StartError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextlib.contextmanager
def node_network() -> Iterator[str]:
    """The bridge with the node's address (made before the API server, which listens on it)."""
    _ip("link", "del", BRIDGE, check=False)  # left by a killed run
    _ip("link", "add", BRIDGE, "type", "bridge")
    try:
        _ip("addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        yield NODE_IP
    finally:
        _ip("link", "del", BRIDGE, check=False)


class RealNode:
    """Start with ``with RealNode(cluster, bin_dir, images) as node:`` inside ``node_network()``;
    ``images`` is called with containerd's ``ctr`` command line to import the images pods use."""

    def __init__(
        self,
        cluster: LocalCluster,
        bin_dir: Path,
        load_images: Callable[[list[str]], None],
        pause_image: str,
        log: Log = _stderr,
    ) -> None:
        if cluster.address != NODE_IP:
            raise ValueError(f"the cluster's API server must listen on the node's address {NODE_IP}")
        self.cluster, self.bin_dir, self.log = cluster, bin_dir, log
        self.load_images, self.pause_image = load_images, pause_image
        self.workdir = cluster.workdir / "node"
        # containerd's state holds unix sockets, whose paths must stay short.
        self.state = Path(tempfile.mkdtemp(prefix="gemma-ctrd-", dir="/run"))
        self.socket = self.state / "containerd.sock"
        self.components: list[Component] = []
        self.timings: dict[str, float] = {}
        self._netns_before: set[str] = set()

    def __enter__(self) -> RealNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        reason = unavailable_reason()
        if reason:
            raise BuildError(reason)
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._netns_before = _netns()
        self._start_containerd()
        step = time.monotonic()
        self.load_images(["ctr", f"--address={self.socket}", "--namespace=k8s.io", "images", "import", "-"])
        self.timings["images"] = time.monotonic() - step
        self.cluster.kubectl("apply", "-f", "-", input_text=COREDNS_RBAC)
        self._start_coredns()
        self._start_kube_proxy()
        self._start_kubelet()
        self._storage()
        deadline = time.monotonic() + timeout
        while not self._ready():
            self._check_running()
            if time.monotonic() > deadline:
                raise StartError(f"node {NODE_NAME} not Ready in {timeout:.0f} s; logs in {self.workdir}")
            time.sleep(0.5)
        self.timings["total"] = time.monotonic() - started
        self.log(
            f"[node] {NODE_NAME} Ready at {NODE_IP}: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        component = Component(name, args, log)
        component.process = self.cluster._popen(args, log, "wb")
        self.components.append(component)

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_running()
            if time.monotonic() > deadline:
                raise StartError(f"{what} not ready in {timeout:.0f} s; logs in {self.workdir}")
            time.sleep(0.2)

    def _check_running(self) -> None:
        for c in self.components:
            if c.process is not None and c.process.poll() is not None:
                raise StartError(f"{c.name} exited with {c.process.returncode}; log {c.log}:\n{c.log_tail()}")

    def _start_containerd(self) -> None:
        step = time.monotonic()
        cni = self.workdir / "cni"
        cni.mkdir()
        (cni / "10-gemma.conflist").write_text(json.dumps(cni_config(), indent=2))
        config = self.workdir / "containerd.toml"
        config.write_text(containerd_config(self.workdir / "containerd", self.state, self.socket,
                                            self.pause_image, cni))  # fmt: skip
        self._spawn("containerd", ["containerd", f"--config={config}"])
        self._wait("containerd", lambda: _ok(["ctr", f"--address={self.socket}", "version"]))
        self.timings["containerd"] = time.monotonic() - step

    def _client_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        crt, key = certs.write_client_cert(self.cluster.workdir / "pki", name, user, groups)
        path = self.workdir / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.cluster.server,
                                                       "certificate-authority": str(self.cluster.ca_file)}}],
            "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }  # fmt: skip
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_coredns(self) -> None:
        kubeconfig = self._client_kubeconfig("coredns", "gemma:coredns")
        health, ready = free_port(), free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f".:53 {{\n  bind {NODE_IP}\n  errors\n  health 127.0.0.1:{health}\n  ready 127.0.0.1:{ready}\n"
            f"  kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n    kubeconfig {kubeconfig} local\n"
            "    pods insecure\n    ttl 5\n  }\n  cache 5\n}\n"
        )
        self._spawn("coredns", [str(self.bin_dir / "coredns"), "-conf", str(corefile)])
        self._wait("coredns", lambda: self.cluster._http_ok(f"http://127.0.0.1:{ready}/ready"))

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy.yaml"
        kubeconfig = self._client_kubeconfig("kube-proxy", "system:kube-proxy")
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],  # never the machine's own interfaces
            "conntrack": {"maxPerCore": 0, "min": 0},  # leave the host's conntrack sysctls alone
        }))  # fmt: skip
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def _start_kubelet(self) -> None:
        step = time.monotonic()
        root = self.workdir / "kubelet"
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.socket, self.cluster.ca_file)))
        kubeconfig = self._client_kubeconfig("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}", f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", f"--node-labels={labels}", "--v=1",
        ])  # fmt: skip
        self.timings["kubelet"] = time.monotonic() - step

    def _storage(self) -> None:
        """A default StorageClass and VOLUMES folders of this node as its volumes (statically provisioned,
        bound when a pod that uses the claim is scheduled)."""
        objects: list[dict[str, Any]] = [{
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }]  # fmt: skip
        for index in range(VOLUMES):
            folder = self.workdir / "volumes" / f"pv-{index}"
            folder.mkdir(parents=True)
            folder.chmod(0o1777)  # pods run as non-root users of their own choosing
            objects.append({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{NODE_NAME}-pv-{index}"},
                "spec": {
                    "capacity": {"storage": VOLUME_SIZE},
                    "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": STORAGE_CLASS,
                    "local": {"path": str(folder)},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}},
                },
            })  # fmt: skip
        self.cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))

    def _ready(self) -> bool:
        node = self.cluster._get_or_none(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # -- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        for component in reversed(self.components):
            proc = component.process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for component in reversed(self.components):
            if component.process is not None:
                try:
                    component.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(component.process.pid, signal.SIGKILL)
                    component.process.wait(timeout=10)
        if any(c.name == "kube-proxy" for c in self.components):
            subprocess.run([str(self.bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
        self.components.clear()
        _remove_own_chains()
        _kill_shims(str(self.socket))
        for root in (self.workdir, self.state):
            _unmount_under(root)
        for name in _netns() - self._netns_before:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(self.state, ignore_errors=True)


def cni_config() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "gemma",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # pods talk to this machine and each other, never further
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP, "rangeStart": "10.244.0.10"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            # Accepts forwarded traffic to and from each pod: a Docker engine sets FORWARD's policy to DROP,
            # and the bridge's traffic passes that chain (bridge-nf-call-iptables).
            {"type": "firewall", "backend": "iptables"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(root: Path, state: Path, socket: Path, pause_image: str, cni: Path) -> str:
    return f"""version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # This kind of VM refuses negative oom_score_adj (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


def kubelet_config(socket: Path, ca_file: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # these machines mount cgroup v1
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "registerNode": True,
        "serializeImagePulls": False,
        # The machine's disk is shared with everything else: evict only when it is really full.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "makeIPTablesUtilChains": False,  # kube-proxy owns the rules; none outlive the node
    }


def _ok(args: list[str]) -> bool:
    return subprocess.run(args, capture_output=True, check=False).returncode == 0


def _netns() -> set[str]:
    folder = Path("/run/netns")
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


OWN_CHAINS = ("KUBE-", "CNI-")  # the kubelet's and kube-proxy's; the CNI firewall plugin's


def _remove_own_chains() -> None:
    """Every KUBE-* and CNI-* iptables chain and the rules that jump to one: what kube-proxy --cleanup
    leaves, and the firewall plugin's per-pod rules of pods that went with containerd."""
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([command, "-t", table, "-S"], capture_output=True, text=True, check=False)
            lines = rules.stdout.splitlines()
            for line in lines:
                parts = shlex.split(line)  # comments are quoted
                jumps = "-j" in parts and parts[parts.index("-j") + 1].startswith(OWN_CHAINS)
                if parts[:1] == ["-A"] and jumps and not parts[1].startswith(OWN_CHAINS):
                    subprocess.run([command, "-t", table, "-D", *parts[1:]], capture_output=True, check=False)
            chains = [line.split()[1] for line in lines if line.startswith(("-N KUBE-", "-N CNI-"))]
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([command, "-t", table, flag, chain], capture_output=True, check=False)


def _kill_shims(socket: str) -> None:
    """containerd's shims outlive it by design; ours are the ones started with its address."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and socket.encode() in b" ".join(cmdline)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    """Unmount everything mounted under ``root`` (pods' volumes, overlay snapshots), deepest first."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
