"""Sources: bring weights from where users keep them into a local folder the runtime reads.

The Hugging Face Hub needs fetching (``hf://org/model[@revision]``, :mod:`gemma_runtime.sources.hf`);
the operator mounts Cloud Storage (``gs://``) and PersistentVolumeClaims (``pvc://``) as volumes, and
``file://`` is already local. Cloud Storage can also be copied directly (:mod:`gemma_runtime.sources.gcs`).
JAX-free and standard library only; never talks to the Kubernetes API.
"""

from gemma_runtime.sources.hf import (
    DEFAULT_ENDPOINT,
    DEFAULT_PATTERNS,
    HfRef,
    download,
    parse_hf_uri,
    snapshot,
)
from gemma_runtime.sources.mirror import MANIFEST, Progress, Snapshot, SourceError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_PATTERNS",
    "MANIFEST",
    "HfRef",
    "Progress",
    "Snapshot",
    "SourceError",
    "download",
    "parse_hf_uri",
    "snapshot",
]
