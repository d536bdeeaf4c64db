"""Valid samples and a table of invalid GemmaServer / GemmaTraining resources, shared by the unit tests
(pydantic) and the cluster tests (the API server's schema and CEL rules): both layers must refuse each
case with a message that names the field."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FILES = sorted(
    [REPO / "manifests" / "gemma-server.yaml", *(REPO / "manifests" / "samples").glob("*.yaml")]
)
DELETE = object()


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def sample(name: str) -> dict[str, Any]:
    return load(REPO / "manifests" / "samples" / f"{name}.yaml")


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base``; ``DELETE`` removes a key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class Invalid:
    id: str
    base: str  # sample name
    patch: dict[str, Any]
    field: str  # the path the API server names
    server: str  # a fragment of the API server's message
    model: str  # a fragment of pydantic's message (via gemma_operator.api.validation)
    name: str = ""  # metadata.name when the case is about it (default bad-<id>)

    def resource(self) -> dict[str, Any]:
        doc = merge(sample(self.base), {"spec": self.patch})
        doc["metadata"]["name"] = self.name or f"bad-{self.id}"
        return doc


TINY_SERVER = "server-tiny-cpu"
TPU_SERVER = "server-gemma-7b-v5e"
TPU_TRAINING = "training-gemma-2b-v5e"
TINY_TRAINING = "training-tiny-cpu"

INVALID = [
    Invalid("variant", TINY_SERVER, {"model": {"variant": "gemma-4b"}}, "spec.model.variant", "Unsupported value", "unsupported value"),
    Invalid("accelerator-type", TINY_SERVER, {"accelerator": {"type": "tpu-v4"}}, "spec.accelerator.type", "Unsupported value", "type 'tpu-v4' is unknown"),
    Invalid("tpu-without-topology", TINY_SERVER, {"accelerator": {"type": "v5e"}}, "spec.accelerator.topology", "topology is required", "topology is required"),
    Invalid("v5e-topology", TPU_SERVER, {"accelerator": {"topology": "3x3"}}, "spec.accelerator.topology", "topology is not valid for TPU v5e", "is not valid for TPU v5e"),
    Invalid("v5p-2d-topology", TPU_SERVER, {"accelerator": {"type": "v5p", "topology": "2x4"}}, "spec.accelerator.topology", "topology is not valid for TPU v5p", "is not valid for TPU v5p"),
    Invalid("topology-on-gpu", TINY_SERVER, {"accelerator": {"type": "nvidia-l4", "count": 1, "topology": "2x4"}}, "spec.accelerator.topology", "topology applies only to TPU", "topology applies only to TPU"),
    Invalid("gpu-without-count", TINY_SERVER, {"accelerator": {"type": "nvidia-l4"}}, "spec.accelerator.count", "count is required for GPU", "count is required for GPU"),
    Invalid("gpu-count", TINY_SERVER, {"accelerator": {"type": "nvidia-h100-80gb", "count": 2}}, "spec.accelerator.count", "count is not valid for nvidia-h100-80gb", "count 2 is not valid for nvidia-h100-80gb"),
    Invalid("chips-per-host", TPU_TRAINING, {"accelerator": {"chipsPerHost": 8}}, "spec.accelerator.chipsPerHost", "chipsPerHost is not valid", "chipsPerHost 8 is not valid"),
    Invalid("server-multi-host", TPU_SERVER, {"accelerator": {"topology": "4x4"}}, "spec.accelerator.topology", "runs on one host", "runs on one host"),
    Invalid("server-2x4-two-hosts", TPU_SERVER, {"accelerator": {"chipsPerHost": 4}}, "spec.accelerator.topology", "runs on one host", "runs on one host"),
    Invalid("negative-replicas", TINY_SERVER, {"replicas": -1}, "spec.replicas", "greater than or equal to 0", "greater than or equal to 0"),
    Invalid("autoscaling-min-max", TINY_SERVER, {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas", "minReplicas must not exceed maxReplicas"),
    Invalid("autoscaling-two-targets", TINY_SERVER, {"autoscaling": {"maxReplicas": 3, "targetQueueDepth": 4, "targetBatchOccupancy": 80}}, "spec.autoscaling.targetBatchOccupancy", "set at most one of targetQueueDepth and targetBatchOccupancy", "set at most one of targetQueueDepth and targetBatchOccupancy"),
    Invalid("unknown-field", TINY_SERVER, {"replica": 2}, "spec.replica", "unknown field", "unknown field"),
    Invalid("checkpoint-required", TINY_SERVER, {"model": {"variant": "gemma-7b"}}, "spec.model.checkpoint", "checkpoint is required for every variant but tiny", "checkpoint is required for every variant but tiny"),
    Invalid("cache-claim-and-size", TINY_SERVER, {"model": {"cache": {"claimName": "c", "sizeLimit": "10Gi"}}}, "spec.model.cache.sizeLimit", "set claimName or sizeLimit, not both", "set claimName or sizeLimit, not both"),
    Invalid("checkpoint-scheme", TPU_SERVER, {"model": {"checkpoint": {"uri": "s3://bucket/gemma"}}}, "spec.model.checkpoint.uri", "should match", "should match pattern"),
    Invalid("prefill-over-sequence", TINY_SERVER, {"serving": {"maxPrefillLength": 8192, "maxSequenceLength": 4096}}, "spec.serving.maxPrefillLength", "maxPrefillLength must not exceed maxSequenceLength", "maxPrefillLength must not exceed maxSequenceLength"),
    Invalid("quantization", TINY_SERVER, {"quantization": "int4"}, "spec.quantization", "Unsupported value", "unsupported value"),
    Invalid("temperature", TINY_SERVER, {"sampling": {"temperature": 3}}, "spec.sampling.temperature", "less than or equal to 2", "less than or equal to 2"),
    Invalid("spot-and-reservation", TPU_SERVER, {"accelerator": {"spot": True, "reservation": "r1"}}, "spec.accelerator.reservation", "spot and reservation are exclusive", "spot and reservation are exclusive"),
    Invalid("env-two-sources", TINY_SERVER, {"pod": {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}, "spec.pod.env[0]", "set exactly one of value and valueFrom", "set exactly one of value and valueFrom"),
    Invalid("mesh-product", TPU_TRAINING, {"parallelism": {"data": 2, "fsdp": 4, "tensor": 1}}, "spec.parallelism", "must equal the chips", "does not fit 16 chips"),
    Invalid("mesh-fill-divides", TPU_TRAINING, {"parallelism": {"data": 3, "fsdp": -1, "tensor": 1}}, "spec.parallelism", "must equal the chips", "does not fit 16 chips"),
    Invalid("mesh-product-expert", TPU_TRAINING, {"parallelism": {"data": 1, "fsdp": -1, "tensor": 1, "expert": 3}}, "spec.parallelism", "must equal the chips", "does not fit 16 chips"),
    Invalid("mesh-two-fills", TPU_TRAINING, {"parallelism": {"data": -1, "fsdp": -1}}, "spec.parallelism", "at most one of data, fsdp and tensor may be -1", "at most one of data, fsdp and tensor may be -1"),
    Invalid("mesh-zero", TPU_TRAINING, {"parallelism": {"tensor": 0}}, "spec.parallelism.tensor", "must be -1 (fill) or a positive integer", "must be -1 (fill) or a positive integer"),
    Invalid("multislice-single-host", TPU_TRAINING, {"accelerator": {"topology": "2x4", "numSlices": 2}, "parallelism": {"data": 2, "fsdp": -1}}, "spec.accelerator.numSlices", "numSlices > 1 needs a multi-host TPU slice", "numSlices > 1 needs a multi-host TPU slice"),
    Invalid("hosts-on-tpu", TPU_TRAINING, {"accelerator": {"hosts": 2}}, "spec.accelerator.hosts", "hosts applies only to cpu", "hosts applies only to cpu"),
    Invalid("server-hosts", TINY_SERVER, {"accelerator": {"hosts": 2}}, "spec.accelerator.hosts", "unknown field", "unknown field"),
    Invalid("steps", TINY_TRAINING, {"training": {"steps": 0}}, "spec.training.steps", "greater than or equal to 1", "greater than or equal to 1"),
    Invalid("dataset-format", TINY_TRAINING, {"dataset": {"format": "parquet"}}, "spec.dataset.format", "Unsupported value", "unsupported value"),
    Invalid("dataset-missing", TINY_TRAINING, {"dataset": DELETE}, "spec.dataset", "Required value", "Field required"),
    Invalid("name-too-long", TINY_TRAINING, {}, "metadata.name", "at most 63 characters", "at most 63 characters", name="t" * 64),
    Invalid("toleration-operator", TINY_SERVER, {"pod": {"tolerations": [{"key": "a", "operator": "In"}]}}, "spec.pod.tolerations[0].operator", "Unsupported value", "unsupported value"),
    Invalid("picker-service-name", TINY_SERVER, {"inferencePool": {"endpointPicker": {"name": "EPP_1"}}}, "spec.inferencePool.endpointPicker.name", "should match", "should match pattern"),
    Invalid("picker-failure-mode", TINY_SERVER, {"inferencePool": {"endpointPicker": {"failureMode": "Retry"}}}, "spec.inferencePool.endpointPicker.failureMode", "Unsupported value", "unsupported value"),
]  # fmt: skip
