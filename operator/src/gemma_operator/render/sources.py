"""Where a checkpoint, tokenizer or dataset URI becomes a path inside the pod.

- ``file:///path``: already in the image.
- ``pvc://claim/path``: the claim, mounted read-only.
- ``gs://bucket/path``: the bucket through GKE's Cloud Storage FUSE CSI driver (an ephemeral, read-only
  volume; the pod annotation ``gke-gcsfuse/volumes`` asks GKE to inject the sidecar; Workload Identity
  through the pod's service account). FUSE serves every format the runtime reads, Orbax included, so
  one mechanism covers all.
- ``hf://org/model[@revision]``: an init container downloads the snapshot into a cache volume with
  ``gemma-runtime fetch``; the token comes from the Secret as an environment variable, never as an
  argument or in the ConfigMap.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from gemma_operator.api.common import SecretKeyRef

SOURCE_ROOT = "/gemma/sources"
OUTPUT_ROOT = "/gemma/output"
CACHE_ROOT = "/gemma/cache"
TOKEN_ENV = "HF_TOKEN"


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
        attributes = {"bucketName": source, "mountOptions": "implicit-dirs"}
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
    *,
    image: str,
    secret: SecretKeyRef | None = None,
    security_context: dict[str, Any] | None = None,
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
        repo = rest.split("@", 1)[0]
        target = f"{CACHE_ROOT}/hf/{repo}"
        mounts._volume("model-cache", {"emptyDir": {}}, CACHE_ROOT, False)
        env = []
        if secret is not None:
            env.append(
                {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}
            )
        mounts.init_containers.append(
            {
                "name": f"fetch-{role}"[:63],
                "image": image,
                "args": ["fetch", uri, "--to", target, "--token-env", TOKEN_ENV],
                "env": env,
                "volumeMounts": [{"name": "model-cache", "mountPath": CACHE_ROOT}],
                "securityContext": security_context or {},
            }
        )
        return target
    raise ValueError(f"unsupported URI scheme in {uri!r}; valid: gs://, hf://, pvc://, file://")
