"""The operator as a real process against the session's control plane (CRDs installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess


@pytest.fixture(scope="session")
def operator(crds: LocalCluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(crds)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, restarted if a test killed it."""
    if operator.process is None or operator.process.poll() is not None:
        operator.start()
    return operator
