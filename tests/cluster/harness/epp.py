"""The Inference Gateway's endpoint picker (EPP) from the Go module
sigs.k8s.io/gateway-api-inference-extension, built beside ``epp-client`` (``epp_client/main.go``: Envoy's
part of one ext_proc exchange, our code) in one wrapper module and cached under
``~/.cache/gemma-operator/epp/<version>/``; ``GEMMA_EPP_DIR`` names a folder holding ``epp`` and
``epp-client`` instead. The picker is v1.5.0, the module's last release with ``cmd/epp``: from v1.6 the
module keeps only a round-robin "lightweight" picker, and the load-aware one moved to llm-d's router,
which the Go module proxy here does not serve. It runs on loopback ports against a LocalCluster, with the
kubeconfig the test gives it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.cluster.harness.binaries import BuildError, Log, _go, _stderr, cache_root
from tests.cluster.harness.control_plane import StartError, _die_with_parent, free_port, stop_process

EPP_VERSION = "v1.5.0"
MODULE = "sigs.k8s.io/gateway-api-inference-extension"
CLIENT_SOURCE = Path(__file__).parent / "epp_client" / "main.go"


@dataclasses.dataclass(frozen=True)
class EppBinaries:
    epp: Path
    client: Path


def cache_dir(version: str = EPP_VERSION) -> Path:
    return cache_root().parent / "epp" / version


def _client_name() -> str:
    """The client's cached name carries a hash of its source, so an edit rebuilds it (seconds)."""
    return f"epp-client-{hashlib.sha256(CLIENT_SOURCE.read_bytes()).hexdigest()[:12]}"


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def ensure_epp(version: str = EPP_VERSION, log: Log = _stderr) -> EppBinaries:
    """The picker and the client (``GEMMA_EPP_DIR``, else the cache), built with ``go`` when missing; a
    BuildError says why they cannot be."""
    override = os.environ.get("GEMMA_EPP_DIR")
    if override:
        found = EppBinaries(Path(override) / "epp", Path(override) / "epp-client")
        if _runnable(found.epp) and _runnable(found.client):
            return found
    folder = cache_dir(version)
    wanted = EppBinaries(folder / "epp", folder / _client_name())
    if _runnable(wanted.epp) and _runnable(wanted.client):
        return wanted
    if shutil.which("go") is None:
        raise BuildError(
            "the endpoint picker is not built and Go is not installed: set GEMMA_EPP_DIR to a folder holding "
            "epp and epp-client, or install Go 1.26+ so they can be built"
        )
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemma-epp-build-") as work:
        mod = Path(work)
        # A wrapper module, as for JobSet: `go get` of an exact version, then builds in its module graph.
        (mod / "go.mod").write_text("module gemma-operator.local/epp-build\n\ngo 1.26\n")
        _go(["get", f"{MODULE}@{version}"], mod, log)
        build = ["build", "-mod=mod", "-v", "-trimpath"]
        if not _runnable(wanted.epp):
            flags = f"-s -w -X {MODULE}/version.BuildRef={version}"
            _go([*build, f"-ldflags={flags}", "-o", str(mod / "epp"), f"{MODULE}/cmd/epp"], mod, log)
            shutil.move(mod / "epp", wanted.epp)
        (mod / "client").mkdir()
        shutil.copyfile(CLIENT_SOURCE, mod / "client" / "main.go")
        _go([*build, "-ldflags=-s -w", "-o", str(mod / "epp-client"), "./client"], mod, log)
        for old in folder.glob("epp-client-*"):
            old.unlink()
        shutil.move(mod / "epp-client", wanted.client)
    log(f"[cluster-binaries] built the endpoint picker {version} in {time.monotonic() - started:.0f} s")
    return wanted


class EndpointPicker:
    """A running picker for one InferencePool: ``args`` as a Deployment would pass them, then loopback
    ports, plaintext gRPC (``epp-client`` speaks no TLS) and an unauthenticated /metrics for the test."""

    def __init__(self, binaries: EppBinaries, kubeconfig: Path, args: Sequence[str], log_dir: Path) -> None:
        self.binaries, self.kubeconfig, self.args = binaries, kubeconfig, list(args)
        self.grpc_port, self.health_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = log_dir / "epp.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EndpointPicker:
        args = [
            str(self.binaries.epp),
            *self.args,
            f"--grpc-port={self.grpc_port}",
            f"--grpc-health-port={self.health_port}",
            f"--metrics-port={self.metrics_port}",
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--enable-pprof=false",
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"the endpoint picker exited with {self.process.returncode}: {self.tail()}")
            if self.metrics() is not None:
                return self
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise StartError(f"the endpoint picker served no /metrics within 60 s: {self.tail()}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        stop_process(self.process)
        self.process = None

    def metrics(self) -> str | None:
        """The picker's own /metrics (its view of each pod's load), or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text: str = r.read().decode()
                return text
        except (urllib.error.URLError, OSError):
            return None

    def pick(self, model: str, prompt: str) -> str:
        """The endpoint (``ip:port``) the picker routes a completion to, as Envoy would learn it."""
        out = subprocess.run(
            [
                str(self.binaries.client),
                f"-addr=127.0.0.1:{self.grpc_port}",
                f"-model={model}",
                f"-prompt={prompt}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"epp-client failed: {out.stderr.strip()}\npicker log:\n{self.tail()}")
        return out.stdout.strip()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
