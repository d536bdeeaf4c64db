"""``gemma-runtime serve --variant tiny-gemma4-moe`` (random weights, the packaged tiny Gemma 4 tokenizer)
as a real process on loopback answers the official ``openai`` client: a completion and a chat, whose prompt
is Gemma 4's chat format (``<|turn>`` turns) by its token count. A tokenizer with more tokens than the
model's embedding is refused before anything loads, with the numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import openai
import pytest

from gemma_runtime.tokenizer import Tokenizer, train_tokenizer
from tests.runtime.serve.helpers import free_port, wait_ready

VARIANT = "tiny-gemma4-moe"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]


def _serve(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gemma_runtime",
        "serve",
        "--variant",
        VARIANT,
        "--host",
        "127.0.0.1",
        *args,
    ]


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    port = free_port()
    command = _serve("--port", str(port), "--max-batch-size", "2", "--max-sequence-length", "128")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, lambda: process.stdout.read() if process.stdout else "", 180)
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    finally:
        process.kill()
        process.wait(30)
        if process.stdout:
            process.stdout.close()


def test_a_tiny_gemma4_server_completes_and_chats_in_gemma4s_format(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [VARIANT]
    completion = client.completions.create(model=VARIANT, prompt="The rain", max_tokens=6, temperature=0)
    assert completion.usage is not None
    assert 1 <= completion.usage.completion_tokens <= 6
    chat = client.chat.completions.create(model=VARIANT, messages=MESSAGES, max_tokens=6, temperature=0)
    assert chat.choices[0].finish_reason in {"length", "stop"}
    assert chat.usage is not None
    tokenizer = Tokenizer.tiny(gemma4=True)
    assert tokenizer.gemma4
    assert chat.usage.prompt_tokens == len(tokenizer.encode_chat(MESSAGES))


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path: Path) -> None:
    sample = Path(str(resources.files("gemma_runtime") / "data" / "sample.txt"))
    larger = train_tokenizer(sample, tmp_path / "larger", 1100)
    done = subprocess.run(
        _serve("--tokenizer", str(larger), "--message-file", str(tmp_path / "message")),
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"has 1100 tokens but {VARIANT} has 1024" in done.stderr
    assert "TokenizerFailed" in (tmp_path / "message").read_text()
