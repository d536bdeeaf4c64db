"""Download a Hugging Face Hub snapshot: the files a Gemma checkpoint needs, verified, kept between runs.

The Hub endpoints used are the ones ``huggingface_hub`` calls:

- ``GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true``: the commit of the revision and its
  files, with sizes and, for LFS files, their sha256;
- ``GET {endpoint}/{repo}/resolve/{commit}/{file}``: one file, usually a redirect to a CDN.

A manifest (``.gemma-download.json``) in the target records what was downloaded and its sha256, so a
second run downloads only what is missing, changed or corrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from gemma_runtime import __version__

log = logging.getLogger(__name__)

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
MANIFEST = ".gemma-download.json"
CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_S = 5.0
TIMEOUT_S = 60.0

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) of the whole download after every chunk."""

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO = re.compile(rf"{_NAME}/{_NAME}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, as an HTTP header value needs


class SourceError(Exception):
    """A source cannot be fetched; the message names the URI and what to do about it."""


@dataclasses.dataclass(frozen=True)
class HfRef:
    """A model repository on the Hub and a revision: a branch, tag or commit."""

    repo: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"hf://{self.repo}@{self.revision}"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files only
    oid: str | None  # what the file is in this revision: the LFS sha256 or the git blob id


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a download did."""

    path: Path
    commit: str
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_downloaded: int
    seconds: float


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
    """Like :func:`download`, and says what was downloaded and what was already there.

    Fetches into the same ``target`` take turns (a lock file beside it): replicas sharing a cache volume
    download once, and the later ones find every file verified."""
    hub = _Hub(ref, endpoint.rstrip("/"), token)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(ref, target):
        return _snapshot(hub, ref, target, tuple(allow_patterns), progress)


@contextlib.contextmanager
def _exclusive(ref: HfRef, target: Path) -> Iterator[None]:
    lock = target.parent / f".{target.name}.lock"
    try:
        handle = lock.open("a")
    except OSError as err:
        raise SourceError(f"{ref}: cannot create {lock}: {err}: is the cache volume writable?") from err
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another fetch is writing %s: waiting for it", ref, target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the process dies


def _snapshot(
    hub: _Hub, ref: HfRef, target: Path, patterns: tuple[str, ...], progress: Progress | None
) -> Snapshot:
    started = time.monotonic()
    commit, listing = hub.list_files()
    wanted = [f for f in listing if _wanted(f.name, patterns)]
    if not wanted:
        raise SourceError(
            f"{ref}: no file of commit {commit} matches {', '.join(patterns)}: "
            "is this a model repository with safetensors weights?"
        )
    target.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(target)
    _prune(ref, target, old, {f.name for f in wanted})

    entries: dict[str, dict[str, Any]] = {}
    todo: list[RemoteFile] = []
    for remote in wanted:
        digest = _verified(_local_path(ref, target, remote.name), remote, old.get(remote.name))
        if digest is None:
            todo.append(remote)
        else:
            entries[remote.name] = _entry(remote, digest)
    skipped = tuple(sorted(entries))
    if skipped:
        log.info("%s: %d files already present and verified: %s", ref, len(skipped), ", ".join(skipped))

    need = sum(f.size or 0 for f in todo)
    free = shutil.disk_usage(target).free
    if need > free:
        raise SourceError(
            f"{ref}: not enough disk space in {target}: {_human(need)} to download, {_human(free)} free: "
            "give the cache volume more room (a larger volume or ephemeral-storage request)"
        )

    meter = _Meter(need, progress)
    for remote in todo:
        entries[remote.name] = hub.fetch(remote, _local_path(ref, target, remote.name), commit, meter)
        _write_manifest(target, ref, commit, entries, complete=False)  # a rerun keeps what is done
    _write_manifest(target, ref, commit, entries, complete=True)
    seconds = time.monotonic() - started
    log.info(
        "%s: %d files downloaded (%s), %d skipped, in %.1f s",
        ref,
        len(todo),
        _human(meter.done),
        len(skipped),
        seconds,
    )
    return Snapshot(target, commit, tuple(f.name for f in todo), skipped, meter.done, seconds)


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


_OPENER = urllib.request.build_opener(_Redirects)


class _Hub:
    """HTTP to one endpoint for one reference; turns failures into SourceErrors that say what to do."""

    def __init__(self, ref: HfRef, endpoint: str, token: str | None) -> None:
        # Secrets made with `echo` end in a newline; http.client would reject it, quoting the header.
        token = (token or "").strip() or None
        if token is not None and not _TOKEN.fullmatch(token):
            raise SourceError(
                f"{ref}: the token holds spaces or control characters: put it in the Secret again"
            )
        self.ref, self.endpoint, self._token = ref, endpoint, token

    def list_files(self) -> tuple[str, list[RemoteFile]]:
        revision = urllib.parse.quote(self.ref.revision, safe="")
        url = f"{self.endpoint}/api/models/{self.ref.repo}/revision/{revision}?blobs=true"
        with self._open(url, "the file list") as response:
            body = self._read(response.read)
        try:
            info = json.loads(body)
            files = [_remote_file(sibling) for sibling in info["siblings"]]
            return str(info.get("sha") or self.ref.revision), files
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise SourceError(f"{self.ref}: unexpected file list from {self.endpoint}: {err!r}") from err

    def fetch(self, remote: RemoteFile, path: Path, commit: str, meter: _Meter) -> dict[str, Any]:
        """Stream one file to a temporary file beside ``path``, verify it, and rename it into place."""
        quoted = urllib.parse.quote(remote.name)
        url = f"{self.endpoint}/{self.ref.repo}/resolve/{urllib.parse.quote(commit, safe='')}/{quoted}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, self._open(url, remote.name) as response:
                digest, size = self._copy(response, out, remote, meter)
            if remote.size is not None and size != remote.size:
                raise SourceError(
                    f"{self.ref}: {remote.name}: expected {remote.size} bytes, received {size}: "
                    "the download was cut short or the file changed; run again"
                )
            if remote.sha256 is not None and digest != remote.sha256:
                raise SourceError(
                    f"{self.ref}: {remote.name}: sha256 {digest} does not match the Hub's {remote.sha256}: "
                    "the download is corrupted; run again"
                )
            os.chmod(temporary, 0o644)  # mkstemp makes 0600; the runtime container may be another user
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return _entry(remote, digest)

    def _copy(self, response: BinaryIO, out: BinaryIO, remote: RemoteFile, meter: _Meter) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        meter.start(remote.name, remote.size)
        while chunk := self._read(response.read, CHUNK_BYTES):
            try:
                out.write(chunk)
            except OSError as err:
                raise SourceError(f"{self.ref}: cannot write {remote.name}: {err}") from err
            digest.update(chunk)
            size += len(chunk)
            meter.add(len(chunk))
            if remote.size is not None and size > remote.size:
                break  # more than listed: stop here, the size check names the file
        meter.finish()
        return digest.hexdigest(), size

    def _open(self, url: str, what: str) -> BinaryIO:
        request = urllib.request.Request(url, headers={"User-Agent": f"gemma-runtime/{__version__}"})
        if self._token:
            # Unredirected: _Redirects decides whether a redirect's target may see it.
            request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            response: BinaryIO = _OPENER.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            with err:
                raise self._refused(err, what) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err
        return response

    def _read(self, read: Callable[..., bytes], *args: int) -> bytes:
        try:
            return read(*args)
        except (OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err

    def _unreachable(self, err: Exception) -> SourceError:
        reason = getattr(err, "reason", None) or err
        return SourceError(
            f"{self.ref}: cannot reach {self.endpoint}: {reason}: check the pod's network access to the "
            "Hub (or HF_ENDPOINT); files already downloaded are kept for the next run"
        )

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


class _Meter:
    """Bytes done per file and overall: a log line every PROGRESS_INTERVAL_S, the callback every chunk."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self.started = time.monotonic()
        self.name, self.file_done, self.file_started, self.logged = "", 0, 0.0, 0.0
        self.size: int | None = None

    def start(self, name: str, size: int | None) -> None:
        self.name, self.size, self.file_done = name, size, 0
        self.file_started = self.logged = time.monotonic()
        log.info("downloading %s (%s)", name, _human(size))

    def add(self, n: int) -> None:
        self.file_done += n
        self.done += n
        if self.callback is not None:
            self.callback(self.done, max(self.total, self.done))
        if time.monotonic() - self.logged >= PROGRESS_INTERVAL_S:
            self._log()

    def finish(self) -> None:
        self._log()

    def _log(self) -> None:
        now = self.logged = time.monotonic()
        log.info(
            "%s: %s / %s at %.1f MB/s; overall %s / %s at %.1f MB/s",
            self.name,
            _human(self.file_done),
            _human(self.size),
            _rate(self.file_done, now - self.file_started),
            _human(self.done),
            _human(self.total),
            _rate(self.done, now - self.started),
        )


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


def _local_path(ref: HfRef, target: Path, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise SourceError(f"{ref}: refusing the file name {name!r}: it would land outside {target}")
    return target.joinpath(*parts)


def _verified(path: Path, remote: RemoteFile, entry: dict[str, Any] | None) -> str | None:
    """The sha256 of the local file when it is the remote one, else None."""
    if not path.is_file() or (remote.size is not None and path.stat().st_size != remote.size):
        return None
    if remote.sha256 is None and (entry is None or entry.get("oid") != remote.oid):
        return None  # no remote hash: only the manifest can vouch for it, for this very blob
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    expected = remote.sha256 or (entry or {}).get("sha256")
    return digest if digest == expected else None


def _entry(remote: RemoteFile, sha256: str) -> dict[str, Any]:
    return {"size": remote.size, "sha256": sha256, "oid": remote.oid}


def _read_manifest(target: Path) -> dict[str, dict[str, Any]]:
    try:
        files = json.loads((target / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError):
        files = None
    if isinstance(files, dict):
        return files
    log.warning("%s is unreadable: verifying every file against the Hub", target / MANIFEST)
    return {}


def _write_manifest(
    target: Path, ref: HfRef, commit: str, files: dict[str, dict[str, Any]], *, complete: bool
) -> None:
    document = {"uri": str(ref), "commit": commit, "complete": complete, "files": files}
    fd, temporary = tempfile.mkstemp(dir=target, prefix=f"{MANIFEST}.", suffix=".part")
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2, sort_keys=True)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target / MANIFEST)


def _prune(ref: HfRef, target: Path, old: dict[str, dict[str, Any]], keep: set[str]) -> None:
    """Remove files an earlier download left that this revision no longer has (a stale shard misleads)."""
    for name in sorted(set(old) - keep):
        path = _local_path(ref, target, name)
        if path.is_file():
            log.info("%s: removing %s, which this revision no longer has", ref, name)
            path.unlink()


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _human(n: int | None) -> str:
    if n is None:
        return "? B"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"


def _rate(n: int, seconds: float) -> float:
    return n / 1e6 / max(seconds, 1e-6)
