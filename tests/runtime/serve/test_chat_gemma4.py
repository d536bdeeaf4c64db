"""The chat endpoint with a Gemma 4 tokenizer (over the fake engine, which counts up from the last prompt
token): the prompt is Gemma 4's template, with the empty thought channel when the service's variant
asks for it (variants.GEMMA4_EMPTY_THOUGHT: 26B A4B, 31B; not E2B, E4B), generation stops at
``<turn|>``, and a service refuses a Gemma 4 variant's chat format over a Gemma 1-3 tokenizer."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gemma_runtime.serve.fake import FakeEngine
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.server import create_app
from gemma_runtime.serve.service import Service
from gemma_runtime.tokenizer import GEMMA4_PIECES, Tokenizer, train_tokenizer
from gemma_runtime.variants import GEMMA4_EMPTY_THOUGHT

CORPUS = "Rain fell on the garden all night, and in the morning the soil was soft and dark.\n" * 8
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("gemma4-tokenizer")
    (folder / "corpus.txt").write_text(CORPUS)
    return Tokenizer(train_tokenizer(folder / "corpus.txt", folder / "g4", 300, symbols=GEMMA4_PIECES))


def _service(tokenizer: Tokenizer, *, empty_thought: bool) -> Service:
    return Service(
        model_name="g4",
        tokenizer=tokenizer,
        load=lambda: FakeEngine(vocab_size=tokenizer.vocab_size),
        max_queued=4,
        defaults=SamplingParams(temperature=0.0),
        default_max_tokens=4,
        empty_thought=empty_thought,
    )


def test_variants_with_the_empty_thought() -> None:
    assert {"gemma4-12b", "gemma4-31b", "gemma4-26b-a4b"} == GEMMA4_EMPTY_THOUGHT  # the larger template
    assert not {"gemma4-e2b", "gemma4-e4b"} & GEMMA4_EMPTY_THOUGHT


@pytest.mark.parametrize("empty_thought", [False, True])
def test_chat_prompt_follows_the_variant(tokenizer: Tokenizer, empty_thought: bool) -> None:
    prompt = tokenizer.encode_chat(MESSAGES, empty_thought=empty_thought)
    assert prompt != tokenizer.encode_chat(MESSAGES, empty_thought=not empty_thought)
    with TestClient(create_app(_service(tokenizer, empty_thought=empty_thought))) as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "g4", "messages": MESSAGES, "max_tokens": 2}
        )
    body = response.json()
    assert body["usage"]["prompt_tokens"] == len(prompt)
    expected = tokenizer.decode(range(prompt[-1] + 1, prompt[-1] + 3))
    assert body["choices"][0]["message"]["content"] == expected


def test_generation_stops_at_the_end_of_turn(tokenizer: Tokenizer) -> None:
    close = tokenizer.end_of_turn_id
    with TestClient(create_app(_service(tokenizer, empty_thought=False))) as client:
        response = client.post(
            "/v1/completions", json={"model": "g4", "prompt": [close - 1], "max_tokens": 4}
        )
    choice = response.json()["choices"][0]
    assert (choice["finish_reason"], response.json()["usage"]["completion_tokens"]) == ("stop", 1)


def test_gemma4_chat_format_needs_a_gemma4_tokenizer() -> None:
    with pytest.raises(ValueError, match="needs Gemma 4's tokenizer"):
        _service(Tokenizer.tiny(), empty_thought=True)
