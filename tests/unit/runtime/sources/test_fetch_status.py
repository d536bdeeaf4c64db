"""What `gemma-runtime fetch` tells the operator, and how fetches sharing a cache take turns.

- While it works, `GET /fetch` on --status-port answers the state with bytes done and total.
- When it ends, --message-file holds one JSON document: done (with counts) or failed (with the error
  naming the URI, never the token); the kubelet makes that the container's termination message.
- Two fetches into one folder (replicas sharing a cache volume): the files are downloaded once, the second
  fetch waits for the first and finds everything verified.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gemma_runtime import fetch
from gemma_runtime.sources import HfRef, snapshot, status
from tests.fakes.hub import GATED, PRIVATE, PUBLIC, TOKEN, FakeHub

WANTED = {"config.json", "model.safetensors", "tokenizer.model"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str = status.PATH) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


def test_status_endpoint_reports_bytes() -> None:
    state = status.FetchStatus("hf://google/gemma-tiny")
    with status.serving(state, "127.0.0.1", 0) as port:
        assert port is not None
        assert _get(port)["state"] == "listing"
        state.progress(5, 10)
        doc = _get(port)
        with pytest.raises(urllib.error.HTTPError):
            _get(port, "/other")
    assert doc["state"] == "downloading"
    assert (doc["bytes_done"], doc["bytes_total"], doc["uri"]) == (5, 10, "hf://google/gemma-tiny")
    assert doc["bytes_per_second"] > 0


def test_a_taken_port_does_not_stop_the_fetch() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with status.serving(status.FetchStatus("u"), "127.0.0.1", taken.getsockname()[1]) as port:
            assert port is None


def test_cli_serves_progress_while_downloading(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    port = _free_port()
    seen: list[dict[str, Any]] = []
    hub.on_file = lambda name: seen.append(_get(port)) if name == "tokenizer.model" else None
    argv = [f"hf://{PUBLIC}", "--to", str(tmp_path / "m"), "--status-port", str(port)]
    argv += ["--status-host", "127.0.0.1", "--message-file", str(tmp_path / "message")]

    assert fetch.main(argv) == 0

    (during,) = seen
    assert during["state"] == "downloading"
    assert 0 < during["bytes_done"] < during["bytes_total"]
    done = json.loads((tmp_path / "message").read_text())
    assert done["state"] == "done"
    assert (done["downloaded"], done["skipped"]) == (3, 0)
    assert done["bytes_done"] == done["bytes_total"] == during["bytes_total"]
    with pytest.raises(urllib.error.URLError):
        _get(port)  # the server is gone with the fetch


def test_cli_failure_message_names_the_uri_not_the_token(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    message = tmp_path / "message"

    assert fetch.main([f"hf://{GATED}", "--to", str(tmp_path / "m"), "--message-file", str(message)]) == 1

    text = message.read_text()
    doc = json.loads(text)
    assert doc["state"] == "failed"
    assert f"hf://{GATED}@main" in doc["error"]
    assert "403 Forbidden" in doc["error"]
    assert TOKEN not in text


def test_two_fetches_into_one_cache_download_once(hub: FakeHub, tmp_path: Path) -> None:
    first_started = threading.Event()

    def slow(name: str) -> None:
        first_started.set()
        time.sleep(0.05)

    hub.on_file = slow
    target = tmp_path / "cache" / "gemma"
    results = []

    def run() -> None:
        results.append(snapshot(HfRef(PRIVATE), target, token=TOKEN, endpoint=hub.url))

    first = threading.Thread(target=run)
    first.start()
    assert first_started.wait(5)
    second = threading.Thread(target=run)
    second.start()
    first.join(60)
    second.join(60)
    assert not first.is_alive(), "the first fetch hung"
    assert not second.is_alive(), "the second fetch hung"

    assert hub.file_gets() == len(WANTED)
    assert [set(r.downloaded) for r in results] == [WANTED, set()]
    assert set(results[1].skipped) == WANTED
    assert not any(p.name.endswith(".part") for p in target.iterdir())
