"""The binaries of a real node beside the control plane: kubelet and kube-proxy from the same
``k8s.io/kubernetes`` release, and CoreDNS (the cluster's DNS) built with the plugins a cluster needs.

The container runtime (containerd, runc) and the CNI plugins are Debian's packages (``make node-deps``
installs them); :func:`missing_packages` names the ones absent. Built binaries are cached per version
under ``~/.cache/gemma-operator/k8s/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.cluster.harness.binaries import (
    BuildError,
    Log,
    Versions,
    _build_kubernetes,
    _go,
    _stderr,
    cache_root,
)

COREDNS_VERSION = "v1.14.7"
NODE_COMMANDS = ("kubelet", "kube-proxy")
# Debian package -> a file it installs (what the node runs).
PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
}
CNI_BIN_DIR = Path("/usr/lib/cni")

# CoreDNS with the plugins a cluster's DNS uses, not its default ~50 (cloud DNS providers among them).
_COREDNS_MAIN = """package main

import (
\t"github.com/coredns/coredns/coremain"

\t_ "github.com/coredns/coredns/plugin/bind"
\t_ "github.com/coredns/coredns/plugin/cache"
\t_ "github.com/coredns/coredns/plugin/errors"
\t_ "github.com/coredns/coredns/plugin/health"
\t_ "github.com/coredns/coredns/plugin/kubernetes"
\t_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
"""


def missing_packages() -> list[str]:
    """The Debian packages a real node needs that are not installed."""
    return [name for name, path in PACKAGES.items() if not os.access(path, os.X_OK)]


def node_cache(versions: Versions | None = None) -> Path:
    versions = versions or Versions()
    return cache_root() / f"node-{versions.kubernetes}-coredns{COREDNS_VERSION}"


def ensure_node_binaries(versions: Versions | None = None, log: Log = _stderr) -> Path:
    """A folder holding kubelet, kube-proxy and coredns, building what is missing into the cache."""
    versions = versions or Versions()
    target = node_cache(versions)
    names = (*NODE_COMMANDS, "coredns")
    if all(os.access(target / name, os.X_OK) for name in names):
        return target
    if shutil.which("go") is None:
        raise BuildError(
            "kubelet, kube-proxy and coredns not found and Go is not installed (Go 1.26+ builds them)"
        )
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gemma-node-build-") as work:
        if not all(os.access(target / name, os.X_OK) for name in NODE_COMMANDS):
            started = time.monotonic()
            _build_kubernetes(Path(work), target, versions, log, NODE_COMMANDS)
            log(f"[cluster-binaries] built kubelet, kube-proxy in {time.monotonic() - started:.0f} s")
        if not os.access(target / "coredns", os.X_OK):
            started = time.monotonic()
            _build_coredns(Path(work) / "coredns", target / "coredns", log)
            log(f"[cluster-binaries] built coredns in {time.monotonic() - started:.0f} s")
    return target


def _build_coredns(mod: Path, output: Path, log: Log) -> None:
    mod.mkdir()
    (mod / "go.mod").write_text("module gemma-operator.local/coredns-build\n\ngo 1.26\n")
    (mod / "main.go").write_text(_COREDNS_MAIN)
    _go(["get", f"github.com/coredns/coredns@{COREDNS_VERSION}"], mod, log)
    _go(["build", "-mod=mod", "-v", "-trimpath", "-ldflags=-s -w", "-o", str(output), "."], mod, log)
