"""Fixtures of the chart tests: the tier's helm binary (without a control plane, for rendering), with
the cluster tier's rule: missing binaries skip, or fail under ``GEMMA_REQUIRE_CLUSTER=1``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.chart.helm import Helm
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.required import required


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    return required("helm", ensure_binaries) / "helm"


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for rendering only (no kubeconfig)."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))
