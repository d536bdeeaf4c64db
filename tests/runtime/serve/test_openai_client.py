"""The official ``openai`` package against ``gemma-runtime serve --variant tiny`` (random weights) run as
a real process on loopback: it completes, chats and streams; our errors surface as the library's own
exception types; SIGTERM shuts the server down cleanly (exit 0) even with a stream in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from tests.runtime.serve.helpers import free_port, wait_ready

START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gemma_runtime",
        "serve",
        "--variant",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch-size",
        "4",
        "--max-sequence-length",
        "256",
        "--max-prefill-length",
        "32",
        "--max-queued-requests",
        "8",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, lambda: process.stdout.read() if process.stdout else "", START_TIMEOUT_S)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def client(server: tuple[str, subprocess.Popen[str]]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=60)


def test_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="tiny", prompt="Hello", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in {"length", "stop"}
    assert completion.usage is not None
    assert 1 <= completion.usage.completion_tokens <= 5
    again = client.completions.create(model="tiny", prompt="Hello", max_tokens=5, temperature=0)
    assert again.choices[0].text == completion.choices[0].text  # greedy is deterministic


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    texts = {
        client.completions.create(
            model="tiny",
            prompt="Once",
            max_tokens=6,
            temperature=1.0,
            seed=7,
            extra_body={"ignore_eos": True},
        )
        .choices[0]
        .text
        for _ in range(2)
    }
    assert len(texts) == 1


def test_chat(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hi there"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
    )
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None


def test_streams(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True, temperature=0
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in {"length", "stop"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    plain = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
    )
    assert text == plain.choices[0].message.content
    completion_stream = client.completions.create(model="tiny", prompt=[5, 6, 7], max_tokens=4, stream=True)
    assert [c.choices[0].finish_reason for c in completion_stream][-1] in {"length", "stop"}


def test_errors_are_the_library_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="tiny", prompt="x", max_tokens=10_000)
    assert "max_tokens" in str(too_long.value)


def test_sigterm_shuts_down_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    url, process = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    finished: list[str | None] = []

    def stream() -> None:
        chunks = client.completions.create(
            model="tiny", prompt="Hi", max_tokens=100, stream=True, extra_body={"ignore_eos": True}
        )
        finished.extend(c.choices[0].finish_reason for c in chunks)

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    reader.join(30)
    assert not reader.is_alive()
    assert finished[-1] == "length"  # the stream in flight was allowed to finish
