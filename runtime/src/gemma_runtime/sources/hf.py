"""Download a Hugging Face Hub snapshot: the files a Gemma checkpoint needs, verified, kept between runs.

The Hub endpoints used are the ones ``huggingface_hub`` calls:

- ``GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true``: the commit of the revision and its
  files, with sizes and, for LFS files, their sha256;
- ``GET {endpoint}/{repo}/resolve/{commit}/{file}``: one file, usually a redirect to a CDN.

:mod:`gemma_runtime.sources.mirror` does the rest: verified files kept between runs, a manifest, the lock
that makes fetches into one folder take turns.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, BinaryIO

from gemma_runtime.sources.http import HttpSource
from gemma_runtime.sources.mirror import Progress, RemoteFile, Snapshot, SourceError, mirror

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO = re.compile(rf"{_NAME}/{_NAME}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, as an HTTP header value needs


@dataclasses.dataclass(frozen=True)
class HfRef:
    """A model repository on the Hub and a revision: a branch, tag or commit."""

    repo: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"hf://{self.repo}@{self.revision}"


def parse_hf_uri(uri: str) -> HfRef:
    """``hf://org/model[@revision]`` -> HfRef; the revision defaults to ``main``."""
    repo, at, revision = uri.removeprefix("hf://").partition("@")
    if (
        not uri.startswith("hf://")
        or not _REPO.fullmatch(repo)
        or (at and not _REVISION.fullmatch(revision))
        or ".." in repo
    ):
        raise ValueError(
            f"{uri!r} is not a Hugging Face model URI: expected hf://org/model[@revision], "
            "e.g. hf://google/gemma-2-2b-it or hf://google/gemma-2-2b-it@main"
        )
    return HfRef(repo, revision if at else "main")


def download(
    ref: HfRef,
    target: Path,
    *,
    token: str | None,
    endpoint: str = DEFAULT_ENDPOINT,
    allow_patterns: Iterable[str] = DEFAULT_PATTERNS,
    progress: Progress | None = None,
) -> Path:
    """Download the files of ``ref`` matching ``allow_patterns`` into ``target``; returns ``target``."""
    return snapshot(
        ref, target, token=token, endpoint=endpoint, allow_patterns=allow_patterns, progress=progress
    ).path


def snapshot(
    ref: HfRef,
    target: Path,
    *,
    token: str | None,
    endpoint: str = DEFAULT_ENDPOINT,
    allow_patterns: Iterable[str] = DEFAULT_PATTERNS,
    progress: Progress | None = None,
) -> Snapshot:
    """Like :func:`download`, and says what was downloaded and what was already there. Fetches into the
    same ``target`` take turns: replicas sharing a cache volume download once."""
    hub = _Hub(ref, endpoint.rstrip("/"), token)
    patterns = tuple(allow_patterns)
    return mirror(
        hub,
        target,
        select=lambda name: _wanted(name, patterns),
        nothing=f"matches {', '.join(patterns)}: is this a model repository with safetensors weights?",
        progress=progress,
    )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Forward the token only within the same origin: the Hub redirects downloads to a CDN."""

    def redirect_request(  # noqa: PLR0917 (urllib's signature)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(newurl) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


class _Hub(HttpSource):
    """HTTP to one endpoint for one reference; turns failures into SourceErrors that say what to do."""

    opener = urllib.request.build_opener(_Redirects)
    network = "the Hub (or HF_ENDPOINT)"

    def __init__(self, ref: HfRef, endpoint: str, token: str | None) -> None:
        # Secrets made with `echo` end in a newline; http.client would reject it, quoting the header.
        token = (token or "").strip() or None
        if token is not None and not _TOKEN.fullmatch(token):
            raise SourceError(
                f"{ref}: the token holds spaces or control characters: put it in the Secret again"
            )
        super().__init__(str(ref), endpoint, token)
        self.ref = ref

    def list_files(self) -> tuple[str, list[RemoteFile]]:
        revision = urllib.parse.quote(self.ref.revision, safe="")
        url = f"{self.endpoint}/api/models/{self.ref.repo}/revision/{revision}?blobs=true"
        with self._open(url, "the file list") as response:
            body = self.read(response.read)
        try:
            info = json.loads(body)
            files = [_remote_file(sibling) for sibling in info["siblings"]]
            return str(info.get("sha") or self.ref.revision), files
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise SourceError(f"{self.ref}: unexpected file list from {self.endpoint}: {err!r}") from err

    def open(self, remote: RemoteFile, version: str) -> BinaryIO:
        quoted = urllib.parse.quote(remote.name)
        url = f"{self.endpoint}/{self.ref.repo}/resolve/{urllib.parse.quote(version, safe='')}/{quoted}"
        return self._open(url, remote.name)

    def _refused(self, err: urllib.error.HTTPError, what: str) -> SourceError:
        where = f"{self.ref}: {what}"
        if _origin(err.url) != _origin(self.endpoint):
            host = urllib.parse.urlsplit(err.url).netloc
            return SourceError(f"{where}: the download server {host} answered HTTP {err.code}; run again")
        if err.code == 401:
            return SourceError(
                f"{where}: the Hub answered 401 Unauthorized: the token is missing or invalid: set the "
                "Secret named in spec.model.checkpoint.secretRef (private repositories and, without a token, "
                "missing ones also answer 401)"
            )
        if err.code == 403:
            return SourceError(
                f"{where}: the Hub answered 403 Forbidden: the model is gated: accept the model's license on "
                f"the Hub with the token's account at {self.endpoint}/{self.ref.repo}"
            )
        if err.code == 404:
            repo, revision = self.ref.repo, self.ref.revision
            hint = {  # the Hub's X-Error-Code says which part was not found
                "RevisionNotFound": f"revision {revision} not found in {repo}: "
                "check the branch, tag or commit after @",
                "EntryNotFound": "a file it listed is missing; run again",
            }.get(
                err.headers.get("X-Error-Code", ""),
                f"repository {repo} or revision {revision} not found on {self.endpoint}: check the URI",
            )
            return SourceError(f"{where}: the Hub answered 404: {hint}")
        return SourceError(f"{where}: the Hub answered HTTP {err.code} {err.reason}; run again later")


def _remote_file(sibling: dict[str, Any]) -> RemoteFile:
    lfs = sibling.get("lfs") or {}
    size = lfs.get("size", sibling.get("size"))
    sha256 = lfs.get("sha256")
    return RemoteFile(
        str(sibling["rfilename"]),
        None if size is None else int(size),
        sha256,
        sha256 or sibling.get("blobId"),
    )


def _wanted(name: str, patterns: tuple[str, ...]) -> bool:
    # `*` stays within one folder, as in a shell: *.safetensors takes the top-level shards, not original/.
    return any(p.count("/") == name.count("/") and fnmatch.fnmatchcase(name, p) for p in patterns)


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()
