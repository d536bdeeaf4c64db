"""JAX's persistent compilation cache across real restarts: a second `gemma-runtime serve` (or `train`) on
the same cache folder loads every program the first one compiled and says so in its log and /metrics."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gemma_runtime import compilation
from tests.runtime.serve.helpers import free_port, wait_ready

START_TIMEOUT_S = 180
CACHE_LINE = re.compile(r"(\d+) of (\d+) programs from the persistent compilation cache")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def _serve_once(cache: Path, log: Path) -> tuple[dict[str, float], str, str]:
    """Start the tiny server on ``cache``, read its cache figures and one greedy completion, stop it."""
    port = free_port()
    command = [sys.executable, "-m", "gemma_runtime", "serve", "--variant", "tiny", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--max-batch-size", "2", "--max-sequence-length", "128"]
    command += ["--max-prefill-length", "32", "--compilation-cache", str(cache)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, process, log.read_text, START_TIMEOUT_S)
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 6, "temperature": 0}
            text = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        finally:
            process.terminate()
            process.wait(60)
    figures = {
        name: _metric(metrics, f"gemma_{name}")
        for name in ("compilation_cache_hits", "compilation_cache_misses", "warm_up_seconds")
    }
    return figures, text, log.read_text()


def test_a_second_server_start_loads_every_program_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "jax-cache"
    first, first_text, first_log = _serve_once(cache, tmp_path / "first.log")
    second, second_text, second_log = _serve_once(cache, tmp_path / "second.log")

    assert first["compilation_cache_hits"] == 0
    assert first["compilation_cache_misses"] > 0
    assert any(cache.iterdir())
    # Every program the first start compiled is a hit now: nothing compiles again.
    assert second["compilation_cache_misses"] == 0
    assert second["compilation_cache_hits"] == first["compilation_cache_misses"]
    assert second_text == first_text  # the cached programs compute the same tokens
    hits, total = map(int, CACHE_LINE.findall(second_log)[-1])
    assert hits == total > 0, second_log
    first_hits, first_total = map(int, CACHE_LINE.findall(first_log)[-1])
    assert (first_hits, first_total > 0) == (0, True), first_log


def test_a_restarted_training_loads_its_step_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "jax-cache"
    command = [sys.executable, "-m", "gemma_runtime", "train", "--variant", "tiny", "--steps", "2"]
    command += ["--batch-size", "2", "--seq-len", "32", "--no-progress", "--compilation-cache", str(cache)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    logs = []
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        logs.append(done.stdout + done.stderr)
    first = [tuple(map(int, m)) for m in CACHE_LINE.findall(logs[0])]
    second = [tuple(map(int, m)) for m in CACHE_LINE.findall(logs[1])]
    assert first, logs[0]
    assert second, logs[1]
    assert (first[-1][0], first[-1][1] > 0) == (0, True), logs[0]  # compiled, none loaded
    assert second[-1][0] == second[-1][1] > 0, logs[1]  # every program loaded


def test_a_folder_that_cannot_be_written_leaves_the_cache_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="gemma_runtime.compilation"):
        use = compilation.enable(str(blocker / "cache"))
    assert use.directory != str(blocker / "cache")
    assert "compiling without it" in caplog.text
