"""Mirror the files of a remote source (the Hub, a bucket) into a local folder, verified and kept.

A source lists its files with their sizes and, where it has them, hashes (the Hub: sha256 of LFS files;
Cloud Storage: md5), and opens one file as a stream. The mirror downloads what is missing, changed or
corrupted, checks every byte against the listing, and records what it wrote in a manifest
(``.gemma-download.json``), so a second run downloads nothing. Fetches into one folder take turns
through a lock file beside it: replicas sharing a cache volume download once.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

log = logging.getLogger(__name__)

MANIFEST = ".gemma-download.json"
CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_S = 5.0

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) of the whole download after every chunk."""


class SourceError(Exception):
    """A source cannot be fetched; the message names the URI and what to do about it."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None = None  # hex, where the source gives it (Hub LFS files)
    oid: str | None = None  # what the file is in this version: LFS sha256, git blob id, GCS generation
    md5: str | None = None  # hex, where the source gives it (Cloud Storage)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a download did."""

    path: Path
    commit: str  # the version mirrored: a Hub commit, or the newest object generation of a prefix
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_downloaded: int
    seconds: float


class Source(Protocol):
    """One remote location; its errors are SourceErrors naming the URI."""

    def __str__(self) -> str: ...

    def list_files(self) -> tuple[str, list[RemoteFile]]:
        """(version, files) of the location."""
        ...

    def open(self, remote: RemoteFile, version: str) -> BinaryIO: ...

    def read(self, read: Callable[..., bytes], *args: int) -> bytes:
        """Call ``read`` turning network failures into SourceErrors."""
        ...


def mirror(
    source: Source,
    target: Path,
    *,
    select: Callable[[str], bool],
    nothing: str,
    progress: Progress | None = None,
) -> Snapshot:
    """Make ``target`` hold the selected files of ``source``; ``nothing`` says what to check when no file
    is selected."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(str(source), target):
        return _mirror(source, target, select, nothing, progress)


@contextlib.contextmanager
def _exclusive(label: str, target: Path) -> Iterator[None]:
    lock = target.parent / f".{target.name}.lock"
    try:
        handle = lock.open("a")
    except OSError as err:
        raise SourceError(f"{label}: cannot create {lock}: {err}: is the cache volume writable?") from err
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another fetch is writing %s: waiting for it", label, target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the process dies


def _mirror(
    source: Source, target: Path, select: Callable[[str], bool], nothing: str, progress: Progress | None
) -> Snapshot:
    started = time.monotonic()
    label = str(source)
    version, listing = source.list_files()
    wanted = [f for f in listing if select(f.name)]
    if not wanted:
        raise SourceError(f"{label}: no file of version {version} {nothing}")
    target.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(target)
    _prune(label, target, old, {f.name for f in wanted})

    entries: dict[str, dict[str, Any]] = {}
    todo: list[RemoteFile] = []
    for remote in wanted:
        digest = _verified(local_path(label, target, remote.name), remote, old.get(remote.name))
        if digest is None:
            todo.append(remote)
        else:
            entries[remote.name] = _entry(remote, digest)
    skipped = tuple(sorted(entries))
    if skipped:
        log.info("%s: %d files already present and verified: %s", label, len(skipped), ", ".join(skipped))

    need = sum(f.size or 0 for f in todo)
    free = shutil.disk_usage(target).free
    if need > free:
        raise SourceError(
            f"{label}: not enough disk space in {target}: {human(need)} to download, {human(free)} free: "
            "give the cache volume more room (a larger volume or ephemeral-storage request)"
        )

    meter = Meter(need, progress)
    for remote in todo:
        entries[remote.name] = _fetch(source, remote, local_path(label, target, remote.name), version, meter)
        _write_manifest(target, label, version, entries, complete=False)  # a rerun keeps what is done
    _write_manifest(target, label, version, entries, complete=True)
    seconds = time.monotonic() - started
    log.info(
        "%s: %d files downloaded (%s), %d skipped, in %.1f s",
        label,
        len(todo),
        human(meter.done),
        len(skipped),
        seconds,
    )
    return Snapshot(target, version, tuple(f.name for f in todo), skipped, meter.done, seconds)


def _fetch(source: Source, remote: RemoteFile, path: Path, version: str, meter: Meter) -> dict[str, Any]:
    """Stream one file to a temporary file beside ``path``, verify it, and rename it into place."""
    label = str(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, source.open(remote, version) as response:
            sha256, md5, size = _copy(source, response, out, remote, meter)
        if remote.size is not None and size != remote.size:
            raise SourceError(
                f"{label}: {remote.name}: expected {remote.size} bytes, received {size}: "
                "the download was cut short or the file changed; run again"
            )
        for kind, got, listed in (("sha256", sha256, remote.sha256), ("md5", md5, remote.md5)):
            if listed is not None and got != listed:
                raise SourceError(
                    f"{label}: {remote.name}: {kind} {got} does not match the listed {listed}: "
                    "the download is corrupted; run again"
                )
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; the runtime container may be another user
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return _entry(remote, sha256)


def _copy(
    source: Source, response: BinaryIO, out: BinaryIO, remote: RemoteFile, meter: Meter
) -> tuple[str, str, int]:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    meter.start(remote.name, remote.size)
    while chunk := source.read(response.read, CHUNK_BYTES):
        try:
            out.write(chunk)
        except OSError as err:
            raise SourceError(f"{source}: cannot write {remote.name}: {err}") from err
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
        meter.add(len(chunk))
        if remote.size is not None and size > remote.size:
            break  # more than listed: stop here, the size check names the file
    meter.finish()
    return sha256.hexdigest(), md5.hexdigest(), size


def md5_hex(base64_md5: str | None) -> str | None:
    """Cloud Storage's md5Hash (base64) as hex; None when absent (composite objects have none)."""
    return base64.b64decode(base64_md5).hex() if base64_md5 else None


class Meter:
    """Bytes done per file and overall: a log line every PROGRESS_INTERVAL_S, the callback every chunk."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self.started = time.monotonic()
        self.name, self.file_done, self.file_started, self.logged = "", 0, 0.0, 0.0
        self.size: int | None = None

    def start(self, name: str, size: int | None) -> None:
        self.name, self.size, self.file_done = name, size, 0
        self.file_started = self.logged = time.monotonic()
        log.info("downloading %s (%s)", name, human(size))

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
            human(self.file_done),
            human(self.size),
            _rate(self.file_done, now - self.file_started),
            human(self.done),
            human(self.total),
            _rate(self.done, now - self.started),
        )


def local_path(label: str, target: Path, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise SourceError(f"{label}: refusing the file name {name!r}: it would land outside {target}")
    return target.joinpath(*parts)


def _verified(path: Path, remote: RemoteFile, entry: dict[str, Any] | None) -> str | None:
    """The sha256 of the local file when it is the remote one, else None."""
    if not path.is_file() or (remote.size is not None and path.stat().st_size != remote.size):
        return None
    listed = remote.sha256 is not None or remote.md5 is not None
    if not listed and (entry is None or entry.get("oid") != remote.oid):
        return None  # no remote hash: only the manifest can vouch for it, for this very object
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False) if remote.md5 else None
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            sha256.update(chunk)
            if md5 is not None:  # only a source that lists md5 pays for a second hash
                md5.update(chunk)
    if remote.sha256 is not None:
        return sha256.hexdigest() if sha256.hexdigest() == remote.sha256 else None
    if md5 is not None:
        return sha256.hexdigest() if md5.hexdigest() == remote.md5 else None
    return sha256.hexdigest() if sha256.hexdigest() == (entry or {}).get("sha256") else None


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
    log.warning("%s is unreadable: verifying every file against the source", target / MANIFEST)
    return {}


def _write_manifest(
    target: Path, label: str, version: str, files: dict[str, dict[str, Any]], *, complete: bool
) -> None:
    document = {"uri": label, "commit": version, "complete": complete, "files": files}
    fd, temporary = tempfile.mkstemp(dir=target, prefix=f"{MANIFEST}.", suffix=".part")
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2, sort_keys=True)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target / MANIFEST)


def _prune(label: str, target: Path, old: dict[str, dict[str, Any]], keep: set[str]) -> None:
    """Remove files an earlier download left that the source no longer has (a stale shard misleads)."""
    for name in sorted(set(old) - keep):
        path = local_path(label, target, name)
        if path.is_file():
            log.info("%s: removing %s, which the source no longer has", label, name)
            path.unlink()


def human(n: int | None) -> str:
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


def fetched(target: Path) -> str | None:
    """The URI ``target`` was fetched from (its manifest), or None when it was not fetched. A SourceError
    when the fetch did not finish or a file no longer has the size the fetch verified (the cache was
    changed): loading it would fail later with a message that hides the cause."""
    try:
        document = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    uri = str(document.get("uri", target))
    if not document.get("complete"):
        raise SourceError(f"{uri}: the download into {target} did not finish: run the fetch again")
    for name, entry in (document.get("files") or {}).items():
        path = target / name
        size = path.stat().st_size if path.is_file() else None
        if size is None or (entry.get("size") is not None and size != entry["size"]):
            found = "is missing" if size is None else f"has {size} bytes"
            raise SourceError(
                f"{uri}: {name} {found} in {target}, the fetch verified {entry.get('size')} bytes: the cache "
                "was changed; run the fetch again (it replaces what differs)"
            )
    return uri
