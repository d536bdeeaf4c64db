"""Fixtures for the downloader's tests: a tiny checkpoint and the stand-in Hub serving it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.hub import FakeHub, populated, serving, tiny_checkpoint


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def checkpoint() -> dict[str, bytes]:
    return tiny_checkpoint()


@pytest.fixture
def hub(checkpoint: dict[str, bytes]) -> Iterator[FakeHub]:
    with serving(populated(checkpoint)) as fake:
        yield fake
