"""Argo CD health checks (manifests/argocd): the Lua, run as Argo CD runs it (Lua 5.1, ``obj``), gives
the expected health for a status of every phase of both kinds, made by the operator's own status
functions; the test data in Argo CD's layout and the argocd-cm ConfigMap match their sources; the test
statuses are valid against the CRD status models."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from gemma_operator.api.serving import GemmaServerStatus
from gemma_operator.api.training import GemmaTrainingStatus
from tests.unit.packaging import generate, health_cases
from tests.unit.packaging.argo_lua import ARGOCD, health

STATUS_MODELS: dict[str, type[BaseModel]] = {
    "GemmaServer": GemmaServerStatus,
    "GemmaTraining": GemmaTrainingStatus,
}
ALL_CASES = [(kind, case) for kind, cases in health_cases.CASES.items() for case in cases()]


@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=lambda v: v if isinstance(v, str) else v.name)
def test_health_of_every_case(kind: str, case: health_cases.Case) -> None:
    assert health(case.obj) == (case.health, case.message)


@pytest.mark.parametrize("kind", list(health_cases.CASES))
def test_every_phase_of_the_status_model_has_a_case(kind: str) -> None:
    annotation = STATUS_MODELS[kind].model_fields["phase"].annotation
    (literal, _none) = typing.get_args(annotation)
    phases = set(typing.get_args(literal))
    covered = {c.obj["status"]["phase"] for c in health_cases.CASES[kind]() if "status" in c.obj}
    assert phases <= covered


@pytest.mark.parametrize("kind", list(health_cases.CASES))
def test_every_argo_health_is_reached(kind: str) -> None:
    reached = {c.health for c in health_cases.CASES[kind]()}
    assert reached == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=lambda v: v if isinstance(v, str) else v.name)
def test_case_statuses_are_valid_against_the_crd_model(kind: str, case: health_cases.Case) -> None:
    if "status" in case.obj:
        STATUS_MODELS[kind].model_validate(case.obj["status"])


@pytest.mark.parametrize("kind", list(health_cases.CASES))
def test_argo_test_files_match_the_cases(kind: str) -> None:
    for path, text in health_cases.render(kind).items():
        assert path.exists(), f"{path} missing: run make manifests"
        assert path.read_text() == text, f"{path} is stale: run make manifests"
    stale = set((ARGOCD / "gemma.ai" / kind / "testdata").glob("*.yaml")) - set(health_cases.render(kind))
    assert not stale, f"test data without a case: {sorted(p.name for p in stale)}"


@pytest.mark.parametrize("kind", list(health_cases.CASES))
def test_argo_health_test_yaml_passes(kind: str) -> None:
    """What argo-cd's own TestLuaHealthScript would check, from the files alone."""
    folder = ARGOCD / "gemma.ai" / kind
    for test in yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]:
        obj = yaml.safe_load(Path(folder / test["inputPath"]).read_text())
        expected = test["healthStatus"]
        assert health(obj) == (expected["status"], expected["message"]), test["inputPath"]


def test_argocd_cm_carries_the_lua_as_it_is() -> None:
    assert generate.ARGOCD_CM.read_text() == generate.argocd_cm(), "argocd-cm.yaml is stale: make manifests"
    data = yaml.safe_load(generate.ARGOCD_CM.read_text())["data"]
    for kind in health_cases.CASES:
        key = f"resource.customizations.health.gemma.ai_{kind}"
        assert data[key] == (ARGOCD / "gemma.ai" / kind / "health.lua").read_text()


def test_a_status_without_conditions_is_progressing_not_an_error() -> None:
    obj = health_cases.server_cases()[1].obj
    obj["status"] = {"observedGeneration": 1}
    assert health(obj) == ("Progressing", "Waiting for the replicas to become ready")
