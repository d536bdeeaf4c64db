"""Fixtures for the downloader's tests: a tiny checkpoint and the stand-in Hub serving it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.fakes.hub import FakeHub, populated, serving


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny checkpoint's files, plus files the downloader must leave on the Hub."""
    rng = np.random.default_rng(0)
    weights = tmp_path_factory.mktemp("made") / "model.safetensors"
    arrays = {"embed": rng.standard_normal((16, 8), dtype=np.float32), "w": rng.standard_normal((8, 8))}
    save_file(arrays, str(weights))
    return {
        "config.json": json.dumps({"model_type": "gemma2", "hidden_size": 8}).encode(),
        "model.safetensors": weights.read_bytes(),
        "tokenizer.model": rng.bytes(300),
        "README.md": b"# a tiny Gemma\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "original/model.safetensors": rng.bytes(64),
    }


@pytest.fixture
def hub(checkpoint: dict[str, bytes]) -> Iterator[FakeHub]:
    with serving(populated(checkpoint)) as fake:
        yield fake
