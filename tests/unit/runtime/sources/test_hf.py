"""The Hugging Face downloader (`gemma_runtime.sources.hf`) and `gemma-runtime fetch`, on a stand-in Hub.

The stand-in is a threaded `http.server` on 127.0.0.1 speaking the two Hub endpoints the downloader uses
(the revision listing with `?blobs=true`, and `resolve`, which redirects LFS files to a "CDN" on another
host name). It serves a tiny checkpoint the tests make, honours tokens, and counts requests per path.

Aspects:
- URIs: `hf://org/model[@revision]` parses; anything else is a ValueError naming the URI.
- First download: exactly the allowed top-level files (not README.md, .gitattributes or original/), with
  the served bytes, readable by safetensors, plus a complete manifest.
- Second download: only the listing is requested, no file.
- Corruption: a local file with other bytes of the same size is caught (by the manifest's sha256 for plain
  files, by the Hub's LFS sha256 for LFS files) and downloaded again; nothing else is.
- Revisions: `@revision` and commit shas pick the files; switching revision downloads only what changed
  and removes files the new revision lacks.
- Verification: a size or sha256 that disagrees with the listing fails naming the file, leaving no
  partial file behind.
- Errors: 401 (no or invalid token), 403 (gated), 404 (repo, revision), an unreachable endpoint, not
  enough disk (before any file is requested).
- Secrecy: the token reaches the Hub's own host only (not the CDN), and appears in no log record (DEBUG)
  and nowhere in the CLI's output, errors included.
- Progress: the callback counts up to the total; log lines give MB/s.
- CLI: `fetch` end to end with the token in an environment variable and HF_ENDPOINT; --token-env,
  --quiet, other schemes and bad URIs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import stat
import types
from collections import Counter
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from gemma_runtime import fetch
from gemma_runtime.sources import MANIFEST, HfRef, SourceError, download, parse_hf_uri, snapshot
from tests.fakes.hub import GATED, PRIVATE, PUBLIC, TOKEN, FakeHub

WANTED = {"config.json", "model.safetensors", "tokenizer.model"}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _manifest(folder: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads((folder / MANIFEST).read_text())
    return document


@pytest.mark.parametrize(
    ("uri", "repo", "revision"),
    [
        ("hf://google/gemma-2-2b-it", "google/gemma-2-2b-it", "main"),
        ("hf://google/gemma-2-2b-it@abc123", "google/gemma-2-2b-it", "abc123"),
        ("hf://google/gemma-3-1b-it@refs/pr/1", "google/gemma-3-1b-it", "refs/pr/1"),
    ],
)
def test_parse_hf_uri(uri: str, repo: str, revision: str) -> None:
    assert parse_hf_uri(uri) == HfRef(repo, revision)


@pytest.mark.parametrize(
    "uri",
    ["gs://bucket/model", "hf://gemma", "hf://google/gemma@", "hf://google/gemma/extra", "hf://../x", ""],
)
def test_parse_hf_uri_rejects(uri: str) -> None:
    with pytest.raises(ValueError, match="expected hf://org/model") as raised:
        parse_hf_uri(uri)
    assert repr(uri) in str(raised.value)


def test_first_download_gets_exactly_the_allowed_files(
    hub: FakeHub, checkpoint: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "cache" / "gemma"
    result = snapshot(HfRef(PUBLIC), out, token=None, endpoint=hub.url)

    assert _files(out) == WANTED | {MANIFEST}
    for name in WANTED:
        assert (out / name).read_bytes() == checkpoint[name]
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    assert set(load_file(str(out / "model.safetensors"))) == {"embed", "w"}
    assert sorted(result.downloaded) == sorted(WANTED)
    assert result.skipped == ()
    assert result.bytes_downloaded == sum(len(checkpoint[n]) for n in WANTED)
    assert result.commit == hub.commit(PUBLIC, "main")
    manifest = _manifest(out)
    assert manifest["complete"] is True
    assert manifest["commit"] == result.commit
    files = manifest["files"]
    assert isinstance(files, dict)
    assert files["config.json"]["sha256"] == hashlib.sha256(checkpoint["config.json"]).hexdigest()
    assert hub.file_gets() == len(WANTED)
    assert hub.file_gets("README.md") == 0
    assert all(v is None for v in hub.auth.values()), "no token given, no Authorization header sent"


def test_download_returns_the_target(hub: FakeHub, tmp_path: Path) -> None:
    assert download(HfRef(PUBLIC), tmp_path / "m", token=None, endpoint=hub.url) == tmp_path / "m"


def test_patterns_with_a_folder_reach_into_it(
    hub: FakeHub, checkpoint: dict[str, bytes], tmp_path: Path
) -> None:
    snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url, allow_patterns=["original/*"])
    assert _files(tmp_path) == {"original/model.safetensors", MANIFEST}
    assert (tmp_path / "original/model.safetensors").read_bytes() == checkpoint["original/model.safetensors"]


def test_second_run_requests_only_the_listing(hub: FakeHub, tmp_path: Path) -> None:
    snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    hub.requests.clear()

    result = snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)

    assert hub.requests == Counter({f"/api/models/{PUBLIC}/revision/main": 1})
    assert result.downloaded == ()
    assert set(result.skipped) == WANTED
    assert result.bytes_downloaded == 0


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_corrupted_local_file_is_downloaded_again(
    hub: FakeHub, checkpoint: dict[str, bytes], tmp_path: Path, name: str
) -> None:
    snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    (tmp_path / name).write_bytes(bytes(len(checkpoint[name])))  # same size, other bytes
    hub.requests.clear()

    result = snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)

    assert result.downloaded == (name,)
    assert (tmp_path / name).read_bytes() == checkpoint[name]
    assert hub.file_gets() == hub.file_gets(name) == 1


def test_plain_file_without_manifest_is_downloaded_again(hub: FakeHub, tmp_path: Path) -> None:
    snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    (tmp_path / MANIFEST).write_text("{not json")
    result = snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    # LFS files are checked against the Hub's sha256; config.json has only the manifest to vouch for it.
    assert result.downloaded == ("config.json",)


def test_revisions_and_switching_between_them(
    hub: FakeHub, checkpoint: dict[str, bytes], tmp_path: Path
) -> None:
    v1 = snapshot(parse_hf_uri(f"hf://{PUBLIC}@v1"), tmp_path, token=None, endpoint=hub.url)
    assert v1.commit == hub.commit(PUBLIC, "v1")
    assert _files(tmp_path) == WANTED | {"extra.safetensors", MANIFEST}
    assert json.loads((tmp_path / "config.json").read_bytes())["v"] == 1
    hub.requests.clear()

    main = snapshot(
        parse_hf_uri(f"hf://{PUBLIC}@{hub.commit(PUBLIC, 'main')}"), tmp_path, token=None, endpoint=hub.url
    )

    assert main.downloaded == ("config.json",)
    assert set(main.skipped) == {"model.safetensors", "tokenizer.model"}
    assert _files(tmp_path) == WANTED | {MANIFEST}, "the file main lacks is removed"
    assert (tmp_path / "config.json").read_bytes() == checkpoint["config.json"]


@pytest.mark.parametrize("lie", [7, -7])
def test_size_mismatch_names_the_file(hub: FakeHub, tmp_path: Path, lie: int) -> None:
    hub.size_lies["model.safetensors"] = lie
    with pytest.raises(SourceError, match=r"model\.safetensors: expected \d+ bytes, received \d+"):
        snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    assert "model.safetensors" not in _files(tmp_path)
    assert not [p for p in _files(tmp_path) if p.endswith(".part")]


def test_hash_mismatch_names_the_file(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add("tokenizer.model")
    with pytest.raises(SourceError, match=r"tokenizer\.model: sha256 \w+ does not match") as raised:
        snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    assert f"hf://{PUBLIC}@main" in str(raised.value)
    assert "tokenizer.model" not in _files(tmp_path)
    assert not [p for p in _files(tmp_path) if p.endswith(".part")]


@pytest.mark.parametrize(
    ("repo", "token", "pattern"),
    [
        (PRIVATE, None, "401 Unauthorized: the token is missing or invalid: set the Secret named in "
         r"spec\.model\.checkpoint\.secretRef"),
        (PUBLIC, "hf_wrong", "401 Unauthorized"),
        (GATED, TOKEN, "403 Forbidden: the model is gated: accept the model's license on the Hub with "
         "the token's account"),
        ("google/no-such-model", None, "404: repository google/no-such-model or revision main not found"),
    ],
)  # fmt: skip
def test_refusals_say_what_to_do(
    hub: FakeHub, tmp_path: Path, repo: str, token: str | None, pattern: str
) -> None:
    with pytest.raises(SourceError, match=pattern) as raised:
        snapshot(HfRef(repo), tmp_path, token=token, endpoint=hub.url)
    assert str(raised.value).startswith(f"hf://{repo}@main: ")
    assert TOKEN not in str(raised.value)


def test_missing_revision(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=f"404: revision nope not found in {PUBLIC}: check the branch"):
        snapshot(HfRef(PUBLIC, "nope"), tmp_path, token=None, endpoint=hub.url)


def test_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(SourceError, match=f"cannot reach {endpoint}"):
        snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=endpoint)


def test_not_enough_disk_is_reported_before_downloading(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        shutil, "disk_usage", lambda _: types.SimpleNamespace(total=10**9, used=10**9, free=100)
    )
    with pytest.raises(SourceError, match=r"not enough disk space in .*: [\d.]+ kB to download, 100 B free"):
        snapshot(HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url)
    assert hub.file_gets() == 0


def test_token_goes_to_the_hub_only_and_never_to_logs(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    snapshot(HfRef(PRIVATE), tmp_path / "a", token=TOKEN, endpoint=hub.url)
    with pytest.raises(SourceError) as raised:
        snapshot(HfRef(GATED), tmp_path / "b", token=TOKEN, endpoint=hub.url)

    assert hub.auth[f"/{PRIVATE}/resolve/{hub.commit(PRIVATE, 'main')}/config.json"] == f"Bearer {TOKEN}"
    cdn = [path for path in hub.auth if path.startswith("/cdn/")]
    assert cdn, "LFS files came through the CDN"
    assert all(hub.auth[path] is None for path in cdn), "the token must not follow a redirect to another host"
    assert TOKEN not in str(raised.value)
    assert "MB/s" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(record.args) for record in caplog.records)


def test_token_from_a_secret_made_with_echo_works(hub: FakeHub, tmp_path: Path) -> None:
    snapshot(HfRef(PRIVATE), tmp_path, token=f"{TOKEN}\n", endpoint=hub.url)
    assert f"Bearer {TOKEN}" in hub.auth.values()


def test_malformed_token_is_refused_without_quoting_it(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="the token holds spaces or control characters") as raised:
        snapshot(HfRef(PRIVATE), tmp_path, token=f"{TOKEN}\r\nX: y", endpoint=hub.url)
    assert TOKEN not in str(raised.value)
    assert hub.requests == Counter()


def test_progress_callback_counts_to_the_total(
    hub: FakeHub, checkpoint: dict[str, bytes], tmp_path: Path
) -> None:
    calls: list[tuple[int, int]] = []
    snapshot(
        HfRef(PUBLIC), tmp_path, token=None, endpoint=hub.url, progress=lambda d, t: calls.append((d, t))
    )
    total = sum(len(checkpoint[n]) for n in WANTED)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.fixture
def cli_env(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The CLI's environment: HF_ENDPOINT at the stand-in, no token unless a test sets one."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return monkeypatch


def test_cli_end_to_end(
    hub: FakeHub,
    cli_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cli_env.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "cache"

    assert fetch.main([f"hf://{PRIVATE}@main", "--to", str(out)]) == 0
    first = capsys.readouterr()
    assert fetch.main([f"hf://{PRIVATE}", "--to", str(out)]) == 0
    second = capsys.readouterr()

    assert "3 files downloaded, 0 skipped" in first.out
    assert f"fetched hf://{PRIVATE}@main (commit {hub.commit(PRIVATE, 'main')[:12]})" in first.out
    assert "MB/s" in first.out
    assert "0 files downloaded, 3 skipped" in second.out
    for name in WANTED:
        assert (out / name).read_bytes() == hub.repos[PRIVATE].revisions["main"][name]
    for text in (first.out, first.err, second.out, second.err, caplog.text):
        assert TOKEN not in text


def test_cli_token_env_and_quiet(
    cli_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cli_env.setenv("MY_HUB_TOKEN", TOKEN)
    argv = [f"hf://{PRIVATE}", "--to", str(tmp_path), "--token-env", "MY_HUB_TOKEN", "--quiet"]

    assert fetch.main(argv) == 0

    assert "3 files downloaded" in capsys.readouterr().out
    chatty = [r for r in caplog.records if r.name.startswith("gemma_runtime") and r.levelno < logging.WARNING]
    assert not chatty
    assert logging.getLogger("gemma_runtime.sources").level == logging.NOTSET, "--quiet is undone after"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pvc://claim/gemma", "fetch handles hf:// and gs:// only; pvc:// is mounted as a volume"),
        ("file:///models/gemma", "fetch handles hf:// and gs:// only"),
        ("gs://B/gemma", "is not a Cloud Storage URI: expected gs://bucket/path"),
        ("hf://gemma", "expected hf://org/model"),
        (f"hf://{PRIVATE}", "401 Unauthorized"),  # no token in HF_TOKEN
    ],
)
def test_cli_errors(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], uri: str, message: str
) -> None:
    assert fetch.main([uri, "--to", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
