"""The Cloud Storage reader's edges without an emulator (tests/cluster/sources runs it against
fake-gcs-server): URIs, the emulator variable, credentials from the metadata server, and refusals that
say what to grant."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gemma_runtime.sources import SourceError, gcs


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("gs://my-models/gemma/2b", gcs.GcsRef("my-models", "gemma/2b")),
        ("gs://my-models/gemma/", gcs.GcsRef("my-models", "gemma")),
        ("gs://my-models", gcs.GcsRef("my-models", "")),
    ],
)
def test_parse(uri: str, ref: gcs.GcsRef) -> None:
    assert gcs.parse_gs_uri(uri) == ref


@pytest.mark.parametrize("uri", ["gs://UPPER/x", "gs://b/../x", "s3://b/x", "gs://"])
def test_parse_rejects(uri: str) -> None:
    with pytest.raises(ValueError, match="expected gs://bucket/path") as raised:
        gcs.parse_gs_uri(uri)
    assert repr(uri) in str(raised.value)


def test_endpoint_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gcs.EMULATOR_ENV, raising=False)
    assert gcs.endpoint_from_env() == ("https://storage.googleapis.com", False)
    monkeypatch.setenv(gcs.EMULATOR_ENV, "127.0.0.1:4443")
    assert gcs.endpoint_from_env() == ("http://127.0.0.1:4443", True)


@contextmanager
def _server(code: int, body: dict[str, object]) -> Iterator[str]:
    """A one-answer HTTP server: every GET gets ``code`` and ``body``; yields host:port."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    if "access_token" in body:
        assert seen
        assert all(h.get("Metadata-Flavor") == "Google" for h in seen)


def test_credentials_from_the_metadata_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with _server(200, {"access_token": "ya29.stand-in", "expires_in": 3599}) as host:
        monkeypatch.setenv(gcs.METADATA_HOST_ENV, host)
        assert gcs.metadata_token() == "ya29.stand-in"


def test_no_metadata_server_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with _server(404, {}) as host:
        monkeypatch.setenv(gcs.METADATA_HOST_ENV, host)
        with pytest.raises(
            SourceError, match=r"run on GKE with Workload Identity .* or set STORAGE_EMULATOR"
        ):
            gcs.metadata_token()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (401, "401 Unauthorized: the credentials were refused"),
        (403, "403 Forbidden: grant the pod's service account roles/storage.objectViewer on bucket b"),
        (404, "404: bucket b or the object does not exist"),
        (503, "HTTP 503"),
    ],
)
def test_refusals_say_what_to_do(tmp_path: Path, code: int, message: str) -> None:
    with (
        _server(code, {"error": {"code": code}}) as host,
        pytest.raises(SourceError, match=message) as raised,
    ):
        gcs.snapshot(gcs.GcsRef("b", "gemma"), tmp_path, token="ya29.secret", endpoint=f"http://{host}")
    assert str(raised.value).startswith("gs://b/gemma: the object list: ")
    assert "ya29.secret" not in str(raised.value)
