"""The Cloud Storage emulator for the gs:// tests: built from Go modules like the control plane, and like
it skipped with the reason when it cannot be built, unless ``GEMMA_REQUIRE_CLUSTER=1`` (CI) makes that a
failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness.gcs import FakeGcs, ensure_fake_gcs
from tests.cluster.harness.required import required


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    binary = required("Cloud Storage emulator", ensure_fake_gcs)
    with FakeGcs(binary, tmp_path_factory.mktemp("fake-gcs")) as emulator:
        yield emulator


@pytest.fixture
def emulator_env(gcs_emulator: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> FakeGcs:
    """STORAGE_EMULATOR_HOST at the emulator, and no proxy between."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return gcs_emulator
