"""fake-gcs-server (github.com/fsouza/fake-gcs-server), a Cloud Storage emulator speaking the JSON API,
built from Go modules like the control-plane binaries and cached beside them
(``~/.cache/gemma-operator/gcs/<version>/``), run on a loopback port with an in-memory backend."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.cluster.harness.binaries import Log, _go_install, _stderr, cache_root, find_or_build
from tests.cluster.harness.control_plane import StartError, _die_with_parent, free_port, stop_process

FAKE_GCS_VERSION = "v1.56.1"
BINARY = "fake-gcs-server"


def binary_path(version: str = FAKE_GCS_VERSION) -> Path:
    return cache_root().parent / "gcs" / version / BINARY


def ensure_fake_gcs(version: str = FAKE_GCS_VERSION, log: Log = _stderr) -> Path:
    """The cached binary (``GEMMA_FAKE_GCS`` overrides), built with ``go install`` when missing."""

    def build(path: Path) -> None:
        _go_install(f"github.com/fsouza/fake-gcs-server@{version}", path.parent, path.parent, log)

    return find_or_build(f"{BINARY} {version}", binary_path(version), "GEMMA_FAKE_GCS", build, log)


class FakeGcs:
    """A running emulator: ``url`` is what STORAGE_EMULATOR_HOST takes; helpers upload objects."""

    def __init__(self, binary: Path, log_dir: Path) -> None:
        self.binary, self.port = binary, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "fake-gcs-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeGcs:
        args = [str(self.binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
        args += ["-backend", "memory", "-public-host", f"127.0.0.1:{self.port}", "-log-level", "warn"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"{BINARY} exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise StartError(f"{BINARY} did not answer within 30 s: {self.log.read_text()}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        stop_process(self.process)
        self.process = None

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")

    def upload(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data, "application/octet-stream")

    def objects(self, bucket: str) -> list[str]:
        """The names of every object in ``bucket``."""
        names: list[str] = []
        token = ""
        while True:
            query = urllib.parse.urlencode({"pageToken": token} if token else {})
            with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as answer:
                page = json.load(answer)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return names

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
