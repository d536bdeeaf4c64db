"""The generated CRDs are structural (no $ref, no null types, every node typed), document every field
for `kubectl explain`, carry the CEL rules, printer columns and subresources, and match crds/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from gemma_operator.api import KINDS, crdgen
from gemma_operator.api.cel import slice_matches
from gemma_operator.api.reference import render_reference
from gemma_operator.api.v1alpha1 import SERVER, TRAINING
from tests.api_cases import REPO


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _nodes(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _schema(info) -> dict[str, Any]:
    schema: dict[str, Any] = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(info) -> None:
    text = yaml.safe_dump(_schema(info))
    assert "$ref" not in text
    assert "anyOf: null" not in text
    for path, node in _nodes(_schema(info)):
        assert node.get("type") != "null", path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_spec_and_status_field_is_described(info) -> None:
    schema = _schema(info)
    for root in ("spec", "status"):
        for path, node in _nodes(schema["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue
            assert node.get("description"), f"{path} has no description"


def test_cel_rules_and_immutability_are_present() -> None:
    spec = _schema(TRAINING)["properties"]["spec"]
    assert {r["rule"] for r in spec["properties"]["accelerator"]["x-kubernetes-validations"]} >= {
        "self == oldSelf"
    }
    assert any("parallelism" in r["rule"] for r in spec["x-kubernetes-validations"])
    server_spec = _schema(SERVER)["properties"]["spec"]
    assert any(r["fieldPath"] == ".model.checkpoint" for r in server_spec["x-kubernetes-validations"])


def test_slice_rules_name_every_topology_in_the_table() -> None:
    expression = slice_matches(lambda _: True)
    for topology in ("1x1", "2x4", "16x16", "2x2x1", "8x8x8"):
        assert f"'{topology}'" in expression


def test_nested_defaults_show_on_read_back() -> None:
    serving = _schema(SERVER)["properties"]["spec"]["properties"]["serving"]
    # maxBatchSize and maxPrefillLength have no fixed default: theirs follow other fields.
    assert serving["default"] == {"maxSequenceLength": 4096, "maxQueuedRequests": 256}
    checkpoint = _schema(SERVER)["properties"]["spec"]["properties"]["model"]["properties"]["checkpoint"]
    assert "default" not in checkpoint  # optional objects stay absent


def test_printer_columns_and_subresources() -> None:
    server = crdgen.crd_for(SERVER)["spec"]
    columns = [c["name"] for c in server["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Model", "Accelerator", "Replicas", "Ready", "Phase", "Endpoint", "Age"]
    assert server["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert server["names"]["categories"] == ["gemma"]
    training = crdgen.crd_for(TRAINING)["spec"]
    columns = [c["name"] for c in training["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Model", "Accelerator", "Phase", "Step", "Loss", "Age"]
    assert "scale" not in training["versions"][0]["subresources"]


def test_committed_crds_and_reference_match_the_models() -> None:
    generated = {**crdgen.render_crds(), "REFERENCE.md": render_reference()}
    for name, text in generated.items():
        assert (REPO / "crds" / name).read_text() == text, f"crds/{name} is stale: run make manifests"


def test_reference_documents_every_field_and_the_accelerator_table() -> None:
    text = render_reference()
    assert "| `spec.accelerator.chipsPerHost` | integer |" in text
    assert "| `status.progress.mfu` | number |" in text
    assert "| `v5e` | `tpu-v5-lite-podslice` | `2x4` | 8 | 4 | 2 | `ct5lp-hightpu-4t` |" in text


def test_a_field_rule_adds_to_the_rules_of_its_type() -> None:
    accelerator = _schema(TRAINING)["properties"]["spec"]["properties"]["accelerator"]
    rules = [r["rule"] for r in accelerator["x-kubernetes-validations"]]
    assert "self == oldSelf" in rules
    assert any("numSlices" in r for r in rules)
    assert any("has(self.topology)" in r for r in rules)
