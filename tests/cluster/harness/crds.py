"""Third-party CRDs whose kinds the operator renders (scrape configs, the InferencePool), taken from the Go
modules that define them, so their own schemas judge what the operator applies. Each file is copied out of
the module once and cached under ``~/.cache/gemma-operator/<name>/<version>/``; nothing is downloaded
from anywhere but the Go module proxy."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from tests.cluster.harness.binaries import BuildError, cache_root, module_download
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.jobset import wait_established


@dataclasses.dataclass(frozen=True)
class ModuleCrd:
    name: str  # the cache folder
    module: str
    version: str
    path: str  # the CRD file inside the module
    crd: str  # its metadata.name

    @property
    def cached(self) -> Path:
        return cache_root().parent / self.name / self.version / Path(self.path).name


SERVICE_MONITOR = ModuleCrd(
    "prometheus-operator",
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    "servicemonitors.monitoring.coreos.com",
)
INFERENCE_POOL = ModuleCrd(
    "inference-extension",
    "sigs.k8s.io/gateway-api-inference-extension",
    "v1.6.2",
    "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",
    "inferencepools.inference.networking.k8s.io",
)


def crd_file(crd: ModuleCrd) -> Path:
    """The CRD file, from the cache or from its module (a BuildError says why it cannot be had)."""
    if crd.cached.is_file():
        return crd.cached
    if shutil.which("go") is None:
        raise BuildError(f"{crd.cached.name} is not cached and Go is not installed to download {crd.module}")
    with tempfile.TemporaryDirectory(prefix="gemma-crd-") as work:
        source = Path(module_download(crd.module, crd.version, Path(work))["Dir"]) / crd.path
        crd.cached.parent.mkdir(parents=True, exist_ok=True)
        partial = crd.cached.with_suffix(".partial")
        shutil.copyfile(source, partial)
        partial.replace(crd.cached)  # never a half-copied file in the cache
    return crd.cached


def install_crd(cluster: LocalCluster, crd: ModuleCrd) -> None:
    """Apply the CRD and wait until it is served."""
    cluster.kubectl("apply", "--server-side", "--field-manager=gemma-tests", "-f", str(crd_file(crd)))
    wait_established(cluster, crd.crd)
