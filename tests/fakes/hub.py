"""A stand-in for the Hugging Face Hub's HTTP API: a threaded `http.server` speaking the two endpoints the
downloader uses (the revision listing with `?blobs=true`, and `resolve`, which redirects LFS files to a
"CDN" on another host name). It honours tokens (401 / 403 / 404 as the Hub answers them) and counts
requests per path. Unit tests and the cluster tier share it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from safetensors.numpy import save

TOKEN = "hf_StandInTokenThatMustNeverLeak42"
PUBLIC, PRIVATE, GATED = "google/gemma-tiny", "acme/private-gemma", "google/gemma-gated"


def _is_lfs(name: str) -> bool:
    return name.endswith(".safetensors") or name == "tokenizer.model"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclasses.dataclass
class FakeRepo:
    revisions: dict[str, dict[str, bytes]]  # branch or tag -> files
    private: bool = False
    gated: bool = False


@dataclasses.dataclass
class FakeHub:
    """State of the stand-in Hub; tests change it between requests."""

    repos: dict[str, FakeRepo] = dataclasses.field(default_factory=dict)
    grants: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # token -> private/gated repos
    size_lies: dict[str, int] = dataclasses.field(default_factory=dict)  # file -> bytes added in listing
    corrupt: set[str] = dataclasses.field(default_factory=set)  # files served with other bytes
    requests: Counter[str] = dataclasses.field(default_factory=Counter)
    auth: dict[str, str | None] = dataclasses.field(default_factory=dict)  # path -> last Authorization
    port: int = 0
    host: str = "127.0.0.1"  # where it listens (set by ``serving``)
    cdn_host: str = "localhost"  # LFS files redirect here: another name for this server, as the Hub's CDN
    on_file: Callable[[str], None] | None = None  # called before a file is served (tests pause here)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def commit(self, repo: str, revision: str) -> str:
        return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()

    def files(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        for name, files in self.repos[repo].revisions.items():
            if revision in (name, self.commit(repo, name)):
                return self.commit(repo, name), files
        return None

    def file_gets(self, name: str | None = None) -> int:
        return sum(
            n
            for path, n in self.requests.items()
            if "/resolve/" in path and (name is None or path.endswith(f"/{name}"))
        )

    def blob(self, digest: str) -> bytes | None:
        for repo in self.repos.values():
            for files in repo.revisions.values():
                for name, data in files.items():
                    if hashlib.sha256(data).hexdigest() == digest:
                        return self.served(name, data)
        return None

    def served(self, name: str, data: bytes) -> bytes:
        return bytes(b ^ 0xFF for b in data) if name in self.corrupt else data


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet: the tests read their own logs
            pass

        def do_GET(self) -> None:
            raw = self.path.partition("?")[0]
            parts = [urllib.parse.unquote(p) for p in raw.split("/")[1:]]
            path = "/".join(["", *parts])
            hub.requests[path] += 1
            hub.auth[path] = self.headers.get("Authorization")
            if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "revision":
                self._listing(f"{parts[2]}/{parts[3]}", parts[5])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            elif parts[0] == "cdn" and (data := hub.blob(parts[1])) is not None:
                self._send(200, data)
            else:
                self._error(404, "EntryNotFound")

        def _refusal(self, repo: str) -> tuple[int, str] | None:
            header = self.headers.get("Authorization")
            token = header.removeprefix("Bearer ") if header else None
            if token is not None and token not in hub.grants:
                return 401, "InvalidCredentials"
            if repo not in hub.repos:
                return 404, "RepoNotFound"
            fake = hub.repos[repo]
            if fake.private or fake.gated:
                if token is None:
                    return 401, "GatedRepo" if fake.gated else "RepoNotFound"
                if repo not in hub.grants[token]:
                    return (403, "GatedRepo") if fake.gated else (404, "RepoNotFound")
            return None

        def _listing(self, repo: str, revision: str) -> None:
            if refusal := self._refusal(repo):
                return self._error(*refusal)
            if (found := hub.files(repo, revision)) is None:
                return self._error(404, "RevisionNotFound")
            commit, files = found
            siblings = []
            for name, data in sorted(files.items()):
                size = len(data) + hub.size_lies.get(name, 0)
                sibling: dict[str, object] = {"rfilename": name, "blobId": _git_blob_id(data), "size": size}
                if _is_lfs(name):
                    sha = hashlib.sha256(data).hexdigest()
                    sibling["lfs"] = {"sha256": sha, "size": size, "pointerSize": 134}
                siblings.append(sibling)
            body = {"id": repo, "sha": commit, "siblings": siblings}
            return self._send(200, json.dumps(body).encode(), "application/json")

        def _resolve(self, repo: str, revision: str, name: str) -> None:
            if refusal := self._refusal(repo):
                return self._error(*refusal)
            if hub.on_file is not None:
                hub.on_file(name)
            found = hub.files(repo, revision)
            if found is None or name not in found[1]:
                return self._error(404, "EntryNotFound")
            data = found[1][name]
            if _is_lfs(name):  # like the Hub: LFS files come from a CDN on another host
                self.send_response(302)
                digest = hashlib.sha256(data).hexdigest()
                self.send_header("Location", f"http://{hub.cdn_host}:{hub.port}/cdn/{digest}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            return self._send(200, hub.served(name, data))

        def _send(self, code: int, body: bytes, content_type: str = "application/octet-stream") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, error_code: str) -> None:
            self.send_response(code)
            body = json.dumps({"error": error_code}).encode()
            self.send_header("X-Error-Code", error_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(hub: FakeHub, host: str = "127.0.0.1") -> Iterator[FakeHub]:
    """Serve ``hub`` on ``host`` (a free port) until the block ends."""
    server = ThreadingHTTPServer((host, 0), _handler(hub))
    hub.host, hub.port = host, server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def populated(checkpoint: dict[str, bytes]) -> FakeHub:
    """A Hub with ``checkpoint`` public (main, and v1 with other files), private (TOKEN may read it)
    and gated (TOKEN has not accepted the license)."""
    fake = FakeHub()
    v1 = {**checkpoint, "config.json": b'{"model_type": "gemma2", "v": 1}', "extra.safetensors": b"x" * 40}
    fake.repos[PUBLIC] = FakeRepo({"main": checkpoint, "v1": v1})
    fake.repos[PRIVATE] = FakeRepo({"main": checkpoint}, private=True)
    fake.repos[GATED] = FakeRepo({"main": checkpoint}, gated=True)
    fake.grants[TOKEN] = {PRIVATE}
    return fake


def tiny_checkpoint(seed: int = 0) -> dict[str, bytes]:
    """A tiny checkpoint's files, plus files a downloader must leave on the Hub."""
    rng = np.random.default_rng(seed)
    arrays = {"embed": rng.standard_normal((16, 8), dtype=np.float32), "w": rng.standard_normal((8, 8))}
    return {
        "config.json": json.dumps({"model_type": "gemma2", "hidden_size": 8}).encode(),
        "model.safetensors": save(arrays),
        "tokenizer.model": rng.bytes(300),
        "README.md": b"# a tiny Gemma\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "original/model.safetensors": rng.bytes(64),
    }
