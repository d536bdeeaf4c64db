"""Read ``gs://bucket/path`` directly over Cloud Storage's JSON API: list the objects under a prefix
(sizes, md5 hashes, generations) and download them into a local folder through the shared mirror.

The operator mounts buckets with Cloud Storage FUSE by default (no copy, no cache disk, every format
readable in place); this reader is for copying weights to node-local disk first, for clusters without
the GKE FUSE CSI driver, and for tests against an emulator. Credentials: the pod's service account
through the GKE metadata server (Workload Identity), or none when ``STORAGE_EMULATOR_HOST`` names an
emulator (as Google's client libraries do).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from gemma_runtime.sources.http import HttpSource
from gemma_runtime.sources.mirror import Progress, RemoteFile, Snapshot, SourceError, md5_hex, mirror

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
METADATA_HOST_ENV = "GCE_METADATA_HOST"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class GcsRef:
    bucket: str
    path: str = ""  # an object, or a folder of objects; empty: the whole bucket

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}".rstrip("/")


def parse_gs_uri(uri: str) -> GcsRef:
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not _BUCKET.fullmatch(bucket) or ".." in path.split("/"):
        raise ValueError(
            f"{uri!r} is not a Cloud Storage URI: expected gs://bucket/path, e.g. gs://models/gemma"
        )
    return GcsRef(bucket, path.strip("/"))


def endpoint_from_env() -> tuple[str, bool]:
    """(JSON API endpoint, whether it is an emulator that needs no credentials)."""
    emulator = os.environ.get(EMULATOR_ENV, "").strip()
    if not emulator:
        return DEFAULT_ENDPOINT, False
    return (emulator if "://" in emulator else f"http://{emulator}").rstrip("/"), True


def metadata_token() -> str:
    """An access token for the pod's service account from the GKE metadata server."""
    host = os.environ.get(METADATA_HOST_ENV, "metadata.google.internal")
    request = urllib.request.Request(f"http://{host}{TOKEN_PATH}", headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["access_token"])
    except (OSError, ValueError, KeyError, http.client.HTTPException) as err:
        raise SourceError(
            f"cannot get Cloud Storage credentials from the metadata server {host}: {err}: run on GKE with "
            "Workload Identity (spec.pod.serviceAccountName bound to a Google service account), or set "
            f"{EMULATOR_ENV} for an emulator"
        ) from err


def snapshot(
    ref: GcsRef,
    target: Path,
    *,
    token: str | None,
    endpoint: str = DEFAULT_ENDPOINT,
    progress: Progress | None = None,
) -> Snapshot:
    """Mirror the object or folder ``ref`` into ``target`` (verified by size and md5, kept between runs)."""
    bucket = _Bucket(ref, endpoint.rstrip("/"), token)
    return mirror(
        bucket, target, select=lambda _: True, nothing=f"is under {ref}: check the path", progress=progress
    )


class _Bucket(HttpSource):
    """The JSON API for one reference; failures become SourceErrors that say what to do."""

    network = "Cloud Storage"

    def __init__(self, ref: GcsRef, endpoint: str, token: str | None) -> None:
        super().__init__(str(ref), endpoint, token)
        self.ref = ref
        self._names: dict[str, str] = {}  # local name -> object name

    def list_files(self) -> tuple[str, list[RemoteFile]]:
        """Objects named ``path`` (one file) or under ``path/``, with names relative to it; the version
        is the newest generation among them."""
        prefix = self.ref.path
        items: list[dict[str, Any]] = []
        page: str | None = ""
        while page is not None:
            query = {"prefix": prefix, "fields": "items(name,size,md5Hash,generation),nextPageToken"}
            if page:
                query["pageToken"] = page
            url = f"{self.endpoint}/storage/v1/b/{self.ref.bucket}/o?{urllib.parse.urlencode(query)}"
            with self._open(url, "the object list") as response:
                body = self.read(response.read)
            try:
                document = json.loads(body)
                items += document.get("items", [])
                page = document.get("nextPageToken") or None
            except (ValueError, AttributeError) as err:
                raise SourceError(
                    f"{self.ref}: unexpected object list from {self.endpoint}: {err!r}"
                ) from err
        files, newest = [], 0
        for item in items:
            name = str(item["name"])
            if name.endswith("/"):
                continue  # a folder placeholder
            if name == prefix:
                relative = name.rsplit("/", 1)[-1]
            elif not prefix or name.startswith(prefix + "/"):
                relative = name[len(prefix) + 1 :] if prefix else name
            else:
                continue  # gs://b/gemma must not take gs://b/gemma-old/...
            self._names[relative] = name
            generation = str(item.get("generation", ""))
            newest = max(newest, int(generation or 0))
            files.append(
                RemoteFile(relative, int(item["size"]), oid=generation, md5=md5_hex(item.get("md5Hash")))
            )
        return str(newest), files

    def open(self, remote: RemoteFile, version: str) -> BinaryIO:
        quoted = urllib.parse.quote(self._names[remote.name], safe="")
        url = f"{self.endpoint}/storage/v1/b/{self.ref.bucket}/o/{quoted}?alt=media&generation={remote.oid}"
        return self._open(url, remote.name)

    def _refused(self, err: urllib.error.HTTPError, what: str) -> SourceError:
        where = f"{self.ref}: {what}"
        bucket = self.ref.bucket
        if err.code == 401:
            return SourceError(
                f"{where}: Cloud Storage answered 401 Unauthorized: the credentials were refused"
            )
        if err.code == 403:
            return SourceError(
                f"{where}: Cloud Storage answered 403 Forbidden: grant the pod's service account "
                f"roles/storage.objectViewer on bucket {bucket} "
                "(Workload Identity: spec.pod.serviceAccountName)"
            )
        if err.code == 404:
            return SourceError(
                f"{where}: Cloud Storage answered 404: bucket {bucket} or the object does not exist"
            )
        return SourceError(f"{where}: Cloud Storage answered HTTP {err.code} {err.reason}; run again later")
