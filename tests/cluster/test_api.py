"""The generated CRDs on a real API server: every sample is accepted (dry run and real) with the same
defaults pydantic fills, every invalid resource in the shared table is refused naming the field,
immutable fields stay put, and `kubectl explain` / `kubectl get gemma` work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gemma_operator.api.validation import parse
from tests.api_cases import INVALID, SAMPLE_FILES, Invalid, load, merge
from tests.api_cases import sample as load_sample
from tests.cluster.harness.control_plane import LocalCluster


def _apply(
    cluster: LocalCluster, namespace: str, doc: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            cluster.binary("kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            namespace,
            "apply",
            "-f",
            "-",
            *extra,
        ],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_every_sample_is_accepted_with_the_models_defaults(
    crds: LocalCluster, namespace: str, path: Path
) -> None:
    doc = load(path)
    dry = _apply(crds, namespace, doc, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    created = _apply(crds, namespace, doc)
    assert created.returncode == 0, created.stderr
    kind = doc["kind"].lower()
    stored = json.loads(crds.kubectl("-n", namespace, "get", kind, doc["metadata"]["name"], "-o", "json"))
    # The API server's structural defaults and pydantic's defaults are one contract.
    assert stored["spec"] == parse(doc).to_api()["spec"]


def test_a_short_sequence_needs_no_prefill_length(crds: LocalCluster, namespace: str) -> None:
    # The prefill default (1024) must not trip the prefill <= sequence rule the user never touched.
    doc = merge(load_sample("server-tiny-cpu"), {"spec": {"serving": {"maxSequenceLength": 512}}})
    doc["spec"]["serving"].pop("maxPrefillLength", None)
    created = _apply(crds, namespace, doc)
    assert created.returncode == 0, created.stderr
    stored = json.loads(crds.kubectl("-n", namespace, "get", "gemmaserver", "tiny", "-o", "json"))
    assert "maxPrefillLength" not in stored["spec"]["serving"]
    assert parse(stored).spec.serving.prefill_length == 512


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_the_api_server_refuses_each_invalid_resource_naming_the_field(
    crds: LocalCluster, namespace: str, case: Invalid
) -> None:
    result = _apply(crds, namespace, case.resource())
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr
    assert case.server in result.stderr, result.stderr


def test_training_accelerator_model_and_mesh_are_immutable(crds: LocalCluster, namespace: str) -> None:
    doc = load(next(p for p in SAMPLE_FILES if p.stem == "training-gemma-2b-v5e"))
    assert _apply(crds, namespace, doc).returncode == 0
    for patch, field in [
        ({"accelerator": {"topology": "4x8"}}, "spec.accelerator"),
        ({"model": {"variant": "gemma-7b"}}, "spec.model"),
        ({"parallelism": {"data": 2, "fsdp": -1}}, "spec.parallelism"),
    ]:
        result = _apply(crds, namespace, merge(doc, {"spec": patch}))
        assert result.returncode != 0
        assert f"{field}: Invalid value" in result.stderr
        assert "is immutable once created" in result.stderr
    # Mutable fields still change.
    assert _apply(crds, namespace, merge(doc, {"spec": {"training": {"steps": 3000}}})).returncode == 0


def test_explain_prints_the_field_descriptions(crds: LocalCluster) -> None:
    out = crds.kubectl("explain", "gemmaserver.spec.accelerator")
    assert "Hardware of each replica (one host)." in out
    assert "chipsPerHost" in out
    assert "TPU chips per host" in out
    out = crds.kubectl("explain", "gemmatraining.spec.parallelism.fsdp")
    assert "Fully sharded data parallelism" in out


def test_kubectl_get_gemma_lists_both_kinds_with_their_columns(crds: LocalCluster, namespace: str) -> None:
    for stem in ("server-tiny-cpu", "training-tiny-cpu"):
        assert _apply(crds, namespace, load(next(p for p in SAMPLE_FILES if p.stem == stem))).returncode == 0
    out = crds.kubectl("-n", namespace, "get", "gemma")
    assert "gemmaserver.gemma.ai/tiny" in out
    assert "gemmatraining.gemma.ai/tiny-train" in out
    header = crds.kubectl("-n", namespace, "get", "gemmaservers").splitlines()[0].split()
    assert header == ["NAME", "MODEL", "ACCELERATOR", "REPLICAS", "READY", "PHASE", "ENDPOINT", "AGE"]
    header = crds.kubectl("-n", namespace, "get", "gtrain").splitlines()[0].split()
    assert header == ["NAME", "MODEL", "ACCELERATOR", "PHASE", "STEP", "LOSS", "AGE"]
