"""JobSet (sigs.k8s.io/jobset), the controller multislice trainings run on, built from its Go module like
the control-plane binaries and cached per version (``~/.cache/gemma-operator/jobset/<version>/``: the
manager binary, its CRD and its webhook manifests, copied from the same module), then started against a
LocalCluster as one of its components: the CRD installed, the manager's webhooks served on loopback with
a certificate from the cluster's CA and registered by URL, its own certificate rotation and leader
election off."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness.binaries import BuildError, Log, _go, _stderr, cache_root, module_download
from tests.cluster.harness.control_plane import LocalCluster, free_port
from tests.cluster.harness.wait import wait_for

JOBSET_VERSION = "v0.12.0"
MODULE = "sigs.k8s.io/jobset"
BINARY = "jobset-manager"
CRD = "jobset.x-k8s.io_jobsets.yaml"  # config/components/crd/bases/ in the module
WEBHOOKS = "webhooks.yaml"  # config/components/webhook/manifests.yaml in the module
FILES = (CRD, WEBHOOKS, BINARY)  # the binary last: a folder with it is complete
JOB_KEY = "jobset.sigs.k8s.io/jobset-name"


def cache_dir(version: str = JOBSET_VERSION) -> Path:
    return cache_root().parent / "jobset" / version


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES) and os.access(folder / BINARY, os.X_OK)


def ensure_jobset(version: str = JOBSET_VERSION, log: Log = _stderr) -> Path:
    """The folder holding the JobSet manager and its manifests (``GEMMA_JOBSET_DIR``, else the cache),
    built with ``go`` when missing; a BuildError says why it cannot be."""
    override = os.environ.get("GEMMA_JOBSET_DIR")
    if override and _complete(Path(override)):
        return Path(override)
    folder = cache_dir(version)
    if _complete(folder):
        return folder
    if shutil.which("go") is None:
        raise BuildError(
            "the JobSet controller is not built and Go is not installed: set GEMMA_JOBSET_DIR to a folder "
            f"holding {', '.join(FILES)}, or install Go 1.26+ so it can be built"
        )
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemma-jobset-build-") as work:
        mod = Path(work)
        # A wrapper module: `go install module@version` asks the proxy for the module's version list
        # (deprecation check), which some proxies refuse; `go get` of an exact version does not.
        (mod / "go.mod").write_text("module gemma-operator.local/jobset-build\n\ngo 1.26\n")
        _go(["get", f"{MODULE}@{version}"], mod, log)
        source = Path(module_download(MODULE, version, mod)["Dir"])
        shutil.copyfile(source / "config/components/crd/bases" / CRD, folder / CRD)
        shutil.copyfile(source / "config/components/webhook/manifests.yaml", folder / WEBHOOKS)
        flags = f"-s -w -X {MODULE}/pkg/version.GitVersion={version}"
        binary = mod / BINARY
        _go(
            ["build", "-mod=mod", "-v", "-trimpath", f"-ldflags={flags}", "-o", str(binary), MODULE], mod, log
        )
        shutil.move(binary, folder / BINARY)
    log(f"[cluster-binaries] built JobSet {version} in {time.monotonic() - started:.0f} s")
    return folder


def webhook_configurations(manifests: str, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """The module's webhook configurations pointed at ``url`` instead of an in-cluster Service. The pod
    webhooks get the objectSelector the module's kustomize patches add, so only JobSet pods pass them
    (every other pod creation in the cluster stays independent of this process)."""
    configurations = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        metadata = {"name": f"jobset-{doc['metadata']['name']}"}
        webhooks = []
        for original in doc["webhooks"]:
            path = original["clientConfig"]["service"]["path"]
            hook = {**original, "clientConfig": {"url": f"{url}{path}", "caBundle": ca_bundle}}
            if any("pods" in rule["resources"] for rule in hook["rules"]):
                hook["objectSelector"] = {"matchExpressions": [{"key": JOB_KEY, "operator": "Exists"}]}
            webhooks.append(hook)
        configurations.append({**doc, "metadata": metadata, "webhooks": webhooks})
    return configurations


def start_jobset(cluster: LocalCluster, folder: Path, timeout: float = 120.0) -> None:
    """Install the CRD, start the manager as one of ``cluster``'s components (stopped with it) and
    register its webhooks once it serves them."""
    workdir = cluster.workdir / "jobset"
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    # The API server's serving certificate names 127.0.0.1 and comes from the cluster's CA: the manager
    # serves its webhooks with it, and the CA is the webhooks' caBundle.
    pki = cluster.ca_file.parent
    shutil.copyfile(pki / "apiserver.crt", certs / "tls.crt")
    shutil.copyfile(pki / "apiserver.key", certs / "tls.key")
    webhook_port, health_port = free_port(), free_port()
    config = workdir / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
                "kind": "Configuration",
                "leaderElection": {"leaderElect": False},
                "internalCertManagement": {"enable": False},
                "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(certs)},
                "metrics": {"bindAddress": "0"},
                "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
            }
        )
    )
    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "--field-manager=gemma-tests", "-f", str(folder / CRD))
    wait_established(cluster, "jobsets.jobset.x-k8s.io")
    # A component of the cluster: stopped, and its log kept, with the others.
    cluster._spawn(
        "jobset",
        [str(folder / BINARY), f"--kubeconfig={cluster.kubeconfig}", f"--config={config}"],
    )
    ready = f"http://127.0.0.1:{health_port}/readyz"  # 200 once the webhook server listens
    cluster._wait("jobset", lambda: cluster._http_ok(ready), time.monotonic() + timeout)
    hooks = webhook_configurations(
        (folder / WEBHOOKS).read_text(),
        f"https://127.0.0.1:{webhook_port}",
        base64.b64encode(cluster.ca_file.read_bytes()).decode(),
    )
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": hooks})
    cluster.kubectl("apply", "--server-side", "--field-manager=gemma-tests", "-f", "-", input_text=listing)
    cluster.timings["jobset"] = time.monotonic() - started


def wait_established(cluster: LocalCluster, crd: str, timeout: float = 60) -> None:
    """Until the CRD is served (``kubectl wait`` fails outright on a CRD that has no conditions yet)."""

    def established() -> bool:
        status = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json")).get("status") or {}
        return any(
            c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or []
        )

    wait_for(established, timeout, f"CRD {crd} to be established")
