"""`gemma-operator render -f FILE`: the children of every resource in a file, offline, as YAML; a bad
resource is reported with its fields and a non-zero exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma_operator import cli
from tests.api_cases import REPO


def test_render_prints_every_child(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", str(REPO / "manifests" / "gemma-server.yaml"), "-n", "team"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    assert {d["metadata"]["namespace"] for d in docs} == {"team"}


def test_render_reports_a_bad_resource(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((REPO / "manifests" / "samples" / "server-tiny-cpu.yaml").read_text())
    doc["spec"]["accelerator"] = {"type": "v5e", "topology": "3x3"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["render", "-f", str(path)]) == 1
    assert "spec.accelerator.topology: topology '3x3' is not valid for TPU v5e" in capsys.readouterr().err
