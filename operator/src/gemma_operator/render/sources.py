"""Where a checkpoint, tokenizer or dataset URI becomes a path inside the pod.

- ``file:///path``: already in the image.
- ``pvc://claim/path``: the claim, mounted read-only.
- ``gs://bucket/path``: the bucket through GKE's Cloud Storage FUSE CSI driver (an ephemeral, read-only
  volume; the pod annotation ``gke-gcsfuse/volumes`` asks GKE to inject the sidecar; Workload Identity
  through the pod's service account). FUSE serves every format the runtime reads, Orbax included, so
  one mechanism covers all. A training's checkpoint output is the same bucket read-write, with
  ``rename-dir-limit``: Orbax commits a checkpoint by renaming its folder, which gcsfuse refuses on a
  flat bucket without it (a bucket with hierarchical namespace renames folders atomically and ignores it).
- ``hf://org/model[@revision]``: an init container downloads the snapshot into a cache volume with
  ``gemma-runtime fetch``; the token comes from the Secret as an environment variable, never as an
  argument or in the ConfigMap. The cache is a node-local emptyDir per pod (``spec.model.cache.sizeLimit``)
  or a claim shared by replicas and kept across restarts (``spec.model.cache.claimName``); the fetch skips
  files already there and verified. While it works, the fetch serves its progress on the runtime port
  (``GET /fetch``, the port is free until the runtime starts) and ends with its outcome as the container's
  termination message: the operator reads both into the SourcesReady condition.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from gemma_operator.api.common import ModelCache, SecretKeyRef

SOURCE_ROOT = "/gemma/sources"
OUTPUT_ROOT = "/gemma/output"
CACHE_ROOT = "/gemma/cache"
CACHE_VOLUME = "model-cache"
COMPILATION_CACHE = f"{CACHE_ROOT}/jax"
TOKEN_ENV = "HF_TOKEN"
FETCH_PREFIX = "fetch-"
TERMINATION_LOG = "/dev/termination-log"
# gcsfuse options (GKE's CSI driver passes "name=value" as --name=value). Folders exist where objects
# imply them; on output, folders of up to rename-dir-limit objects may be renamed (the value gcsfuse's own
# aiml-checkpointing profile sets; a checkpoint folder holds a few files per process).
SOURCE_MOUNT_OPTIONS = "implicit-dirs"
OUTPUT_MOUNT_OPTIONS = "implicit-dirs,rename-dir-limit=200000"


@dataclasses.dataclass(frozen=True)
class Fetcher:
    """What a fetch init container needs besides the URI: the runtime image, the restricted security
    context, the port it reports progress on, and where the cache lives."""

    image: str
    security_context: dict[str, Any]
    status_port: int
    pull_policy: str = "IfNotPresent"
    cache: ModelCache | None = None


@dataclasses.dataclass
class Mounts:
    """Volumes, mounts, init containers and pod annotations that make sources readable."""

    volumes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mounts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    init_containers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    def _volume(self, name: str, volume: dict[str, Any], mount_path: str, read_only: bool) -> None:
        if all(v["name"] != name for v in self.volumes):
            self.volumes.append({"name": name, **volume})
            self.mounts.append({"name": name, "mountPath": mount_path, "readOnly": read_only})


def _mount(scheme: str, rest: str, mounts: Mounts, *, writable: bool) -> str:
    """A claim or a bucket (GKE's Cloud Storage FUSE CSI driver) as a volume: read-only for sources,
    read-write (a separate volume) for output."""
    source, _, path = rest.partition("/")
    label = f"{'pvc' if scheme == 'pvc' else 'gcs'}-{source}"
    name = _volume_name(f"{'out' if writable else 'src'}-{label}")
    root = f"{OUTPUT_ROOT if writable else SOURCE_ROOT}/{label}"
    read_only = {} if writable else {"readOnly": True}
    if scheme == "pvc":
        volume: dict[str, Any] = {"persistentVolumeClaim": {"claimName": source, **read_only}}
    else:
        options = OUTPUT_MOUNT_OPTIONS if writable else SOURCE_MOUNT_OPTIONS
        attributes = {"bucketName": source, "mountOptions": options}
        volume = {
            "csi": {"driver": "gcsfuse.csi.storage.gke.io", **read_only, "volumeAttributes": attributes}
        }
        mounts.annotations["gke-gcsfuse/volumes"] = "true"
    mounts._volume(name, volume, root, not writable)
    return f"{root}/{path}".rstrip("/")


def _volume_name(role: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", role.lower())[:63]


def resolve(
    uri: str,
    role: str,
    mounts: Mounts,
    fetcher: Fetcher,
    *,
    secret: SecretKeyRef | None = None,
    writable: bool = False,
) -> str:
    """The path the runtime reads ``uri`` at (or, ``writable``, writes to: training checkpoints);
    adds what the pod needs to ``mounts``."""
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        return "/" + rest.lstrip("/")
    if scheme in ("pvc", "gs"):
        return _mount(scheme, rest, mounts, writable=writable)
    if writable:
        raise ValueError(f"cannot write to {uri!r}; valid for output: gs://, pvc://, file://")
    if scheme == "hf":
        folder = _fetch(uri, role, mounts, fetcher, secret=secret)
        return folder  # the URI names a repository; the runtime finds tokenizer.model or tokenizer.json in it
    raise ValueError(f"unsupported URI scheme in {uri!r}; valid: gs://, hf://, pvc://, file://")


def _fetch(uri: str, role: str, mounts: Mounts, fetcher: Fetcher, *, secret: SecretKeyRef | None) -> str:
    """An init container downloading ``uri`` into the cache; one per distinct URI."""
    repo, _, revision = uri.removeprefix("hf://").partition("@")
    # One folder per revision: servers sharing a cache claim at other revisions never undo each other.
    target = f"{CACHE_ROOT}/hf/{repo}/{re.sub(r'[^A-Za-z0-9._-]', '--', revision or 'main')}"
    _cache_volume(mounts, fetcher.cache)
    if any(c["args"][1] == uri for c in mounts.init_containers):
        return target  # the checkpoint's repository also holds the tokenizer
    env = []
    if secret is not None:
        env.append(
            {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}
        )
    args = ["fetch", uri, "--to", target, "--token-env", TOKEN_ENV]
    args += ["--status-port", str(fetcher.status_port), "--message-file", TERMINATION_LOG]
    container: dict[str, Any] = {
        "name": f"{FETCH_PREFIX}{role}"[:63],
        "image": fetcher.image,
        "imagePullPolicy": fetcher.pull_policy,
        "args": args,
        "env": env,
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": CACHE_ROOT}],
        "securityContext": fetcher.security_context,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    size = fetcher.cache.size_limit if fetcher.cache is not None else None
    if size is not None:  # the scheduler then picks a node with room for the download
        container["resources"] = {"requests": {"ephemeral-storage": size}}
    mounts.init_containers.append(container)
    return target


def compilation_cache(mounts: Mounts, cache: ModelCache | None) -> str:
    """Where the runtime keeps JAX's persistent compilation cache: ``jax/`` on the model cache volume,
    which every runtime pod gets (a claim: kept across pods and shared by replicas, so a new replica
    compiles nothing; else the pod's emptyDir: kept across container restarts). JAX keys entries by
    program, versions and devices, so servers of other models or chips can share the folder."""
    _cache_volume(mounts, cache)
    return COMPILATION_CACHE


def _cache_volume(mounts: Mounts, cache: ModelCache | None) -> None:
    """The cache: a claim when named, else a node-local emptyDir. The runtime reads downloads there and
    writes only its compilation cache (``jax/``), so the mount is read-write."""
    if cache is not None and cache.claim_name is not None:
        volume: dict[str, Any] = {"persistentVolumeClaim": {"claimName": cache.claim_name}}
    else:
        size = cache.size_limit if cache is not None else None
        volume = {"emptyDir": {"sizeLimit": size} if size is not None else {}}
    mounts._volume(CACHE_VOLUME, volume, CACHE_ROOT, False)
