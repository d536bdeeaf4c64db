"""A GemmaServer's memory plan: a model that cannot fit is refused naming the fields and the numbers; an
unset maxBatchSize becomes the largest batch that fits, rendered into the runtime's config with the mesh.
A GemmaTraining's grace period: two saves of the busiest host's state at the assumed rate, a margin, a
floor."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from gemma_operator.api.serving import GemmaServerSpec
from gemma_operator.api.training import GemmaTrainingSpec
from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.plan import (
    CHECKPOINT_WRITE_BYTES_PER_SECOND,
    GRACE_MARGIN_SECONDS,
    DoesNotFitError,
    plan_status,
    server_plan,
    training_grace_seconds,
)
from gemma_operator.render.serving import render_server
from gemma_runtime.memory import training_state_bytes
from gemma_runtime.variants import preset
from tests.api_cases import merge, sample


def _gemma2_27b(topology: str, serving: dict[str, Any]) -> dict[str, Any]:
    doc = merge(sample("server-gemma-7b-v5e"), {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}})
    doc["spec"]["model"]["variant"] = "gemma2-27b"
    doc["spec"]["accelerator"] = {"type": "v5e", "topology": topology}
    doc["spec"]["serving"] = serving
    return doc


def _spec(doc: dict[str, Any]) -> GemmaServerSpec:
    spec = parse(doc).spec
    assert isinstance(spec, GemmaServerSpec)
    return spec


def _runtime_config(doc: dict[str, Any]) -> dict[str, Any]:
    (config_map,) = [c for c in render_server(doc, parse(doc), Settings()) if c["kind"] == "ConfigMap"]
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["runtime.yaml"])
    return loaded


def test_a_model_that_cannot_fit_names_the_fields_and_what_would() -> None:
    doc = _gemma2_27b("2x2", {"maxBatchSize": 32, "maxSequenceLength": 8192})
    with pytest.raises(DoesNotFitError) as err:
        server_plan(_spec(doc))
    message = str(err.value)
    for field in (
        "spec.model.variant gemma2-27b",
        "spec.accelerator v5e 2x2",
        "spec.serving.maxBatchSize 32",
    ):
        assert field in message
    assert "spec.serving.maxSequenceLength 8192" in message
    assert "weights 12.68 GiB" in message
    assert "at most 2 slots fit at 8192 tokens" in message  # XLA's TPU compiler: 3 need 15.76 GiB
    with pytest.raises(DoesNotFitError):
        render_server(doc, parse(doc), Settings())  # nothing renders either


def test_an_unset_batch_gets_the_largest_that_fits() -> None:
    small = _gemma2_27b("2x2", {"maxSequenceLength": 8192})
    assert _runtime_config(small)["max_batch_size"] == 2
    wide = _gemma2_27b("2x4", {"maxSequenceLength": 8192})
    config = _runtime_config(wide)
    plan = server_plan(_spec(wide))
    assert config["max_batch_size"] == plan.slots > 2
    assert config["mesh"] == {"data": 1, "tensor": 8}
    assert config["accelerator"] == {"type": "v5e", "topology": "2x4"}
    status = plan_status(plan)
    assert status["maxBatchSize"] == plan.slots
    assert status["mesh"] == "1x8"
    assert status["weightBytesPerChip"] + status["kvCacheBytesPerChip"] <= status["usableBytesPerChip"]


def test_not_one_slot_fits() -> None:
    doc = _gemma2_27b("1x1", {})
    with pytest.raises(DoesNotFitError, match="maxBatchSize unset"):
        server_plan(_spec(doc))


def test_cpu_keeps_an_explicit_or_default_batch() -> None:
    doc = merge(sample("server-tiny-cpu"), {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}})
    doc["spec"]["serving"].pop("maxBatchSize", None)
    assert _runtime_config(doc)["max_batch_size"] == 32
    assert _runtime_config(doc)["mesh"] == {"data": 1, "tensor": 1}


def _training(variant: str, accelerator: dict[str, Any], parallelism: dict[str, int]) -> GemmaTrainingSpec:
    doc = merge(
        sample("training-multislice-v5p"), {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}}
    )
    doc["spec"]["model"]["variant"] = variant
    doc["spec"]["accelerator"] = accelerator
    doc["spec"]["parallelism"] = parallelism
    spec = parse(doc).spec
    assert isinstance(spec, GemmaTrainingSpec)
    return spec


def test_the_grace_period_is_two_saves_of_the_busiest_hosts_share_plus_a_margin() -> None:
    whole = training_state_bytes(preset("gemma2-9b"))
    # v5e 4x4: four hosts; fsdp over all 16 chips, so each host writes a quarter of the state.
    spec = _training("gemma2-9b", {"type": "v5e", "topology": "4x4"}, {"data": 1, "fsdp": -1, "tensor": 1})
    quarter = -(-whole // 4) / CHECKPOINT_WRITE_BYTES_PER_SECOND
    assert training_grace_seconds(spec) == math.ceil(GRACE_MARGIN_SECONDS + 2 * quarter) == 308
    # data filled in (-1): 4 replicas of 4 chips, each on one host, which writes the whole state.
    filled = _training("gemma2-9b", {"type": "v5e", "topology": "4x4"}, {"data": -1, "fsdp": 4, "tensor": 1})
    assert training_grace_seconds(filled) == math.ceil(GRACE_MARGIN_SECONDS + 2 * whole / 200e6) == 1140
