"""gs:// read directly over Cloud Storage's JSON API, against fake-gcs-server serving checkpoints the tests
write: our Orbax format (a folder tree) and a Hugging Face safetensors folder are fetched with
`gemma-runtime fetch` and load into the same model; a second fetch downloads nothing; an object replaced
in the bucket or corrupted on disk is downloaded again (md5 from the listing), alone; a single object
can be fetched; a prefix never takes a sibling folder; errors name the URI. (The operator mounts
buckets with Cloud Storage FUSE by default: tests/unit/operator/render/test_sources.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save

from gemma_runtime import fetch
from gemma_runtime.checkpoint import load_model, store
from gemma_runtime.model import Transformer, tiny_config
from gemma_runtime.sources import MANIFEST, SourceError
from gemma_runtime.sources.gcs import GcsRef, snapshot
from tests.cluster.harness.gcs import FakeGcs
from tests.fakes.checkpoints import hf_files, hf_tensors


def _bucket(emulator: FakeGcs) -> str:
    name = f"models-{uuid.uuid4().hex[:8]}"
    emulator.create_bucket(name)
    return name


def _upload_folder(emulator: FakeGcs, bucket: str, prefix: str, folder: Path) -> set[str]:
    names = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        emulator.upload(bucket, f"{prefix}/{relative}", path.read_bytes())
        names.add(relative)
    return names


def _fetch(uri: str, target: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = fetch.main([uri, "--to", str(target)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_orbax_checkpoint_fetched_from_the_bucket_loads(
    emulator_env: FakeGcs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Transformer(tiny_config(2), rngs=nnx.Rngs(0))
    written = store.save(model, tmp_path / "written")
    bucket = _bucket(emulator_env)
    names = _upload_folder(emulator_env, bucket, "fine-tunes/gemma-tiny", written)
    emulator_env.upload(bucket, "fine-tunes/gemma-tiny-old/config.json", b"{}")  # a sibling, not taken
    target = tmp_path / "cache" / "gemma-tiny"

    first = _fetch(f"gs://{bucket}/fine-tunes/gemma-tiny", target, capsys)
    second = _fetch(f"gs://{bucket}/fine-tunes/gemma-tiny/", target, capsys)

    assert f"{len(names)} files downloaded, 0 skipped" in first
    assert f"0 files downloaded, {len(names)} skipped" in second
    local = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert local == names | {MANIFEST}
    restored = load_model(target)
    tokens = jnp.arange(1, 20)[None]
    np.testing.assert_array_equal(np.asarray(restored(tokens)[0]), np.asarray(model(tokens)[0]))


def test_safetensors_fetched_from_the_bucket_load_and_changes_are_fetched_alone(
    emulator_env: FakeGcs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = hf_tensors()
    bucket = _bucket(emulator_env)
    for name, data in hf_files(tensors).items():
        emulator_env.upload(bucket, f"gemma-hf/{name}", data)
    emulator_env.upload(bucket, "gemma-hf/tokenizer.model", b"t" * 300)
    uri, target = f"gs://{bucket}/gemma-hf", tmp_path / "hf"

    assert "3 files downloaded" in _fetch(uri, target, capsys)
    embedding = load_model(target).embedder.input_embedding[...]
    np.testing.assert_array_equal(np.asarray(embedding), tensors["model.embed_tokens.weight"])

    (target / "tokenizer.model").write_bytes(b"x" * 300)  # corrupted on disk, same size
    changed = {**tensors, "model.norm.weight": np.ones(8, np.float32)}
    emulator_env.upload(bucket, "gemma-hf/model.safetensors", save(changed))  # a new generation
    again = _fetch(uri, target, capsys)

    assert "2 files downloaded, 1 skipped" in again
    assert (target / "tokenizer.model").read_bytes() == b"t" * 300
    np.testing.assert_array_equal(np.asarray(load_model(target).final_norm.scale[...]), np.ones(8))


def test_a_single_object(emulator_env: FakeGcs, tmp_path: Path) -> None:
    bucket = _bucket(emulator_env)
    emulator_env.upload(bucket, "tokenizers/gemma/tokenizer.model", b"spm" * 100)
    result = snapshot(
        GcsRef(bucket, "tokenizers/gemma/tokenizer.model"), tmp_path, token=None, endpoint=emulator_env.url
    )
    assert result.downloaded == ("tokenizer.model",)
    assert (tmp_path / "tokenizer.model").read_bytes() == b"spm" * 100


def test_errors_name_the_uri(
    emulator_env: FakeGcs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = _bucket(emulator_env)
    with pytest.raises(SourceError, match=rf"gs://{bucket}/nothing: no file of version 0 is under"):
        snapshot(GcsRef(bucket, "nothing"), tmp_path, token=None, endpoint=emulator_env.url)
    assert fetch.main(["gs://no-such-bucket-x/gemma", "--to", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "error: gs://no-such-bucket-x/gemma: the object list: Cloud Storage answered 404" in err
