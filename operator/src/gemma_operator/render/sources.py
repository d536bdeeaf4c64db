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


def _volume_name(role: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"src-{role}".lower())[:63]


def resolve(
    uri: str,
    role: str,
    mounts: Mounts,
    *,
    image: str,
    secret: SecretKeyRef | None = None,
    security_context: dict[str, Any] | None = None,
) -> str:
    """The path the runtime reads ``uri`` at; adds what the pod needs to ``mounts``."""
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        return "/" + rest.lstrip("/")
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        name = _volume_name(f"pvc-{claim}")
        root = f"{SOURCE_ROOT}/pvc-{claim}"
        mounts._volume(name, {"persistentVolumeClaim": {"claimName": claim, "readOnly": True}}, root, True)
        return f"{root}/{path}".rstrip("/")
    if scheme == "gs":
        bucket, _, path = rest.partition("/")
        name = _volume_name(f"gcs-{bucket}")
        root = f"{SOURCE_ROOT}/gcs-{bucket}"
        csi = {
            "csi": {
                "driver": "gcsfuse.csi.storage.gke.io",
                "readOnly": True,
                "volumeAttributes": {"bucketName": bucket, "mountOptions": "implicit-dirs"},
            }
        }
        mounts._volume(name, csi, root, True)
        mounts.annotations["gke-gcsfuse/volumes"] = "true"
        return f"{root}/{path}".rstrip("/")
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
