"""Loading what `gemma-runtime fetch` put in a cache: a Hugging Face checkpoint the tests make, served by
the stand-in Hub, loads; errors about it name the hf:// URI it came from (a missing tensor, the wrong
kind of model); a download that did not finish, or a cache file changed since it was verified, is
refused before loading with what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gemma_runtime.checkpoint import CheckpointError, load_model
from gemma_runtime.sources import MANIFEST, HfRef, snapshot
from tests.fakes.checkpoints import HF_CONFIG, hf_files, hf_tensors
from tests.fakes.hub import FakeHub, FakeRepo, serving

REPO = "google/gemma-tiny"
URI = f"hf://{REPO}@main"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with serving(FakeHub()) as fake:
        yield fake


def _fetch(hub: FakeHub, files: dict[str, bytes], target: Path) -> Path:
    hub.repos[REPO] = FakeRepo({"main": files})
    return snapshot(HfRef(REPO), target, token=None, endpoint=hub.url).path


def test_a_fetched_checkpoint_loads(hub: FakeHub, tmp_path: Path) -> None:
    tensors = hf_tensors()
    model = load_model(_fetch(hub, hf_files(tensors), tmp_path / "m"))
    np.testing.assert_array_equal(
        np.asarray(model.embedder.input_embedding[...]), tensors["model.embed_tokens.weight"]
    )


def test_errors_name_the_uri(hub: FakeHub, tmp_path: Path) -> None:
    tensors = hf_tensors()
    del tensors["model.norm.weight"]
    target = _fetch(hub, hf_files(tensors), tmp_path / "m")
    with pytest.raises(
        CheckpointError, match=rf"^{URI} \(fetched into .*\): .*tensors missing, e.g. final_norm"
    ):
        load_model(target)
    llama = _fetch(hub, hf_files(hf_tensors(), {**HF_CONFIG, "model_type": "llama"}), tmp_path / "l")
    with pytest.raises(CheckpointError, match=rf"^{URI} .*model_type 'llama' is not a Gemma text model"):
        load_model(llama)


def test_an_unfinished_download_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    target = _fetch(hub, hf_files(hf_tensors()), tmp_path / "m")
    manifest = json.loads((target / MANIFEST).read_text())
    (target / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(CheckpointError, match=rf"^{URI}: the download into .* did not finish: run the fetch"):
        load_model(target)


def test_a_changed_cache_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    target = _fetch(hub, hf_files(hf_tensors()), tmp_path / "m")
    with (target / "model.safetensors").open("ab") as f:
        f.write(b"extra")
    with pytest.raises(
        CheckpointError, match=rf"^{URI}: model.safetensors has \d+ bytes in .*, the fetch verified"
    ):
        load_model(target)
    (target / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model.safetensors is missing"):
        load_model(target)
