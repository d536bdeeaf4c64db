"""Cloud Storage FUSE (github.com/googlecloudplatform/gcsfuse), the file system GKE's CSI driver mounts a
bucket with, built from its Go module like the control-plane binaries and cached per version
(``~/.cache/gemma-operator/gcsfuse/<version>/gcsfuse``), and mounted on fake-gcs-server with the mount
options a pod spec names, turned into gcsfuse flags as GKE's sidecar turns them
(``pkg/sidecar_mounter/sidecar_mounter_config.go`` in GoogleCloudPlatform/gcs-fuse-csi-driver).

gcsfuse opens /dev/fuse and calls mount(2) itself when it runs as root; otherwise it needs fusermount3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.cluster.harness.binaries import BuildError, Log, _go, _stderr, cache_root, find_or_build
from tests.cluster.harness.control_plane import StartError, _die_with_parent
from tests.cluster.harness.gcs import FakeGcs

# The newest release that the Go here (1.26.8) builds: v3.12 and later ask for Go 1.27 in go.mod.
GCSFUSE_VERSION = "v3.11.4"
MODULE = "github.com/googlecloudplatform/gcsfuse/v3"
BINARY = "gcsfuse"


def binary_path(version: str = GCSFUSE_VERSION) -> Path:
    return cache_root().parent / "gcsfuse" / version / BINARY


def ensure_gcsfuse(version: str = GCSFUSE_VERSION, log: Log = _stderr) -> Path:
    """The cached binary (``GEMMA_GCSFUSE`` overrides), built with ``go`` when missing; a BuildError says
    why it cannot be."""

    def build(path: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="gemma-gcsfuse-build-") as work:
            mod = Path(work)
            # A wrapper module and `go get` of the exact version, as for JobSet (no version-list request).
            (mod / "go.mod").write_text("module gemma-operator.local/gcsfuse-build\n\ngo 1.26\n")
            _go(["get", f"{MODULE}@{version}"], mod, log)
            build_args = ["build", "-mod=mod", "-v", "-trimpath", "-ldflags=-s -w", "-o", str(mod / BINARY)]
            _go([*build_args, MODULE], mod, log)
            shutil.move(mod / BINARY, path)

    return find_or_build(f"{BINARY} {version}", binary_path(version), "GEMMA_GCSFUSE", build, log)


def usable_gcsfuse() -> Path:
    """``ensure_gcsfuse()`` on a machine that can mount FUSE file systems; a BuildError says why not."""
    if not os.path.exists("/dev/fuse"):
        raise BuildError("no /dev/fuse on this machine: FUSE file systems cannot be mounted")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise BuildError("not root and no fusermount3: gcsfuse cannot mount a bucket")
    return ensure_gcsfuse()


def sidecar_flags(mount_options: str) -> list[str]:
    """gcsfuse flags for a CSI volume's ``mountOptions``, as GKE's sidecar makes them: ``name=value``
    becomes ``--name=value`` and ``name`` ``--name`` (the ``section:key:value`` form goes to a config file
    there; the operator renders none)."""
    flags = []
    for option in filter(None, mount_options.split(",")):
        if ":" in option:
            raise ValueError(f"config-file mount option {option!r} is not supported by this harness")
        flags.append(f"--{option}")
    return flags


def emulator_flags(emulator: FakeGcs) -> list[str]:
    """What gcsfuse needs besides a pod's options to mount a bucket of fake-gcs-server."""
    return [
        # "localhost" in the endpoint marks a test server: gcsfuse skips the gRPC storage-layout call,
        # which the emulator does not serve, and treats the bucket as flat (no hierarchical namespace).
        f"--custom-endpoint=http://localhost:{emulator.port}/storage/v1/",
        "--anonymous-access",
        # The emulator has no objects.move (a file rename is then a copy and a delete; folder renames,
        # what Orbax's commit needs, are unchanged), and answers the default reader with 404 for an object
        # just written, so reads go through the JSON API.
        "--enable-atomic-rename-object=false",
        "--experimental-enable-json-read",
        # No machine-type tuning (on some GPU and TPU machines it raises rename-dir-limit by itself).
        "--disable-autoconfig",
    ]


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


class Mount:
    """``bucket`` mounted at ``path`` by a gcsfuse process in the foreground, until the block ends."""

    def __init__(self, binary: Path, bucket: str, path: Path, flags: list[str], log: Path) -> None:
        self.binary, self.bucket, self.path, self.flags, self.log = binary, bucket, path, flags, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), "--foreground", *self.flags, self.bucket, str(self.path)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        deadline = time.monotonic() + 30
        while not _mounted(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise StartError(f"{BINARY} did not mount gs://{self.bucket}: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if _mounted(self.path):
            unmount = ["umount"] if os.geteuid() == 0 else ["fusermount3", "-u"]
            if subprocess.run([*unmount, str(self.path)], capture_output=True, check=False).returncode:
                subprocess.run(
                    [*unmount, "-z" if unmount[0] == "fusermount3" else "-l", str(self.path)],
                    capture_output=True,
                    check=False,
                )  # busy: detach it now, free it when idle
        if self.process is not None:
            try:
                self.process.wait(10)  # gcsfuse leaves once its file system is unmounted
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
