"""The HTTP API in process over the fake engine (hand-checkable text): completions from text or token
ids, chat with Gemma's template, SSE streams that end with [DONE], stop strings, logprobs; every client
mistake a 400 naming the field in OpenAI's error document; 429 with Retry-After when the queue is full;
health, readiness, Prometheus metrics and the operator's /stats."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gemma_runtime.serve.fake import FakeEngine
from gemma_runtime.serve.interface import StepResult, StepWork
from gemma_runtime.serve.server import create_app
from gemma_runtime.tokenizer import Tokenizer
from tests.runtime.serve.helpers import fake_service

TOKENIZER = Tokenizer.tiny()


@pytest.fixture
def client() -> Iterator[TestClient]:
    service, _ = fake_service(max_len=128)
    with TestClient(create_app(service)) as test_client:
        assert service.wait_ready(10)
        yield test_client


def _counting(start: int, n: int) -> str:
    return TOKENIZER.decode(range(start + 1, start + 1 + n))


def test_completion_from_token_ids_counts_up(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "tiny", "prompt": [100, 200], "max_tokens": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == _counting(200, 5)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_completion_from_text_with_logprobs(client: TestClient) -> None:
    prompt = TOKENIZER.encode("Hello")
    response = client.post(
        "/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 3, "logprobs": 2}
    )
    choice = response.json()["choices"][0]
    assert choice["text"] == _counting(prompt[-1], 3)
    assert choice["logprobs"]["token_logprobs"] == [-1.0, -1.0, -1.0]
    assert len(choice["logprobs"]["top_logprobs"][0]) == 2


def test_stop_string_ends_the_text(client: TestClient) -> None:
    full = _counting(200, 8)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    response = client.post(
        "/v1/completions", json={"model": "tiny", "prompt": [200], "max_tokens": 8, "stop": [stop]}
    )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[: full.index(stop)]


def test_eos_stops_unless_ignored(client: TestClient) -> None:
    eos = TOKENIZER.eos_id
    stopped = client.post("/v1/completions", json={"model": "tiny", "prompt": [eos - 1], "max_tokens": 4})
    assert stopped.json()["choices"][0]["finish_reason"] == "stop"
    assert stopped.json()["usage"]["completion_tokens"] == 1
    ignored = client.post(
        "/v1/completions", json={"model": "tiny", "prompt": [eos - 1], "max_tokens": 4, "ignore_eos": True}
    )
    assert ignored.json()["choices"][0]["finish_reason"] == "length"


def test_chat_uses_the_gemma_template(client: TestClient) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    prompt = TOKENIZER.encode_chat(messages)
    response = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 3}
    )
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": _counting(prompt[-1], 3)}
    assert body["usage"]["prompt_tokens"] == len(prompt)


def _events(response_text: str) -> list[str]:
    return [line[len("data: ") :] for line in response_text.split("\n\n") if line.startswith("data: ")]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streams_end_with_a_finish_reason_and_done(client: TestClient, path: str) -> None:
    body = {"model": "tiny", "max_tokens": 6, "stream": True}
    if path == "/v1/completions":
        body["prompt"] = [300]
    else:
        body["messages"] = [{"role": "user", "content": "Hi"}]
    response = client.post(path, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    key = "text" if path == "/v1/completions" else "delta"
    pieces = [c["choices"][0][key] for c in chunks]
    if path == "/v1/completions":
        assert "".join(pieces) == _counting(300, 6)
    else:
        assert pieces[0] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny", "prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "max_tokens": 500}, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "temperature": 9}, "temperature"),
        ({"model": "gpt-4", "prompt": "x"}, "model"),
        ({"model": "tiny", "prompt": [5] * 200}, "prompt"),
        ({"model": "tiny", "prompt": [5000]}, "prompt"),
        ({"model": "tiny", "prompt": ""}, "prompt"),
        ({"model": "tiny"}, "prompt"),
        ({"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "tiny", "prompt": "x", "n": 2}, "n"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client: TestClient, body: dict[str, object], param: str) -> None:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_bad_chat_and_malformed_json(client: TestClient) -> None:
    wrong_turns = {"model": "tiny", "messages": [{"role": "assistant", "content": "Hi"}]}
    assert client.post("/v1/chat/completions", json=wrong_turns).json()["error"]["param"] == "messages"
    bad_role = {"model": "tiny", "messages": [{"role": "robot", "content": "Hi"}]}
    assert client.post("/v1/chat/completions", json=bad_role).json()["error"]["param"] == "messages.0.role"
    response = client.post(
        "/v1/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


def test_queue_full_is_a_429_with_retry_after() -> None:
    service, _engine = fake_service(slots=1, max_queued=0, step_delay=0.05)
    with TestClient(create_app(service)) as client:
        assert service.wait_ready(10)
        scheduler = service.scheduler
        assert scheduler is not None
        from gemma_runtime.serve.scheduler import Request
        from tests.runtime.serve.helpers import Collect

        scheduler.submit(Request([5], 200, Collect()))  # holds the only slot
        response = client.post("/v1/completions", json={"model": "tiny", "prompt": [5], "max_tokens": 2})
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_health_readiness_models_metrics_and_stats(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    client.post("/v1/completions", json={"model": "tiny", "prompt": [7], "max_tokens": 4})
    metrics = client.get("/metrics").text
    for name in (
        "gemma_time_to_first_token_seconds_bucket",
        "gemma_time_per_output_token_seconds_bucket",
        "gemma_e2e_request_latency_seconds_count",
        "gemma_requests_waiting",
        "gemma_slots_in_use",
        "gemma_prompt_tokens_total",
        "gemma_generation_tokens_total 4.0",
    ):
        assert name in metrics
    stats = client.get("/stats").json()
    assert set(stats) == {
        "requests_running",
        "requests_waiting",
        "generated_tokens_per_second",
        "time_to_first_token_p50_seconds",
    }
    assert stats["generated_tokens_per_second"] > 0


def test_not_ready_until_the_engine_is_loaded() -> None:
    import threading

    from gemma_runtime.serve.fake import FakeEngine
    from gemma_runtime.serve.sampling import SamplingParams
    from gemma_runtime.serve.service import Service

    gate = threading.Event()

    def load() -> FakeEngine:
        gate.wait(10)
        return FakeEngine()

    service = Service(
        model_name="tiny",
        tokenizer=TOKENIZER,
        load=load,
        max_queued=1,
        defaults=SamplingParams(),
        default_max_tokens=4,
    )
    with TestClient(create_app(service)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/completions", json={"model": "tiny", "prompt": [5]})
        assert response.status_code == 503
        gate.set()
        assert service.wait_ready(10)
        assert client.get("/readyz").status_code == 200


class _Broken(FakeEngine):
    def step(self, work: StepWork) -> StepResult:
        if any(chunk.tokens[-1] == 666 for chunk in work.chunks):
            raise RuntimeError("device lost")
        return super().step(work)


def test_an_engine_failure_ends_requests_and_fails_liveness() -> None:
    service, _ = fake_service()
    engine = _Broken()
    service._load = lambda: engine
    with TestClient(create_app(service)) as client:
        assert service.wait_ready(10)
        response = client.post("/v1/completions", json={"model": "tiny", "prompt": [666], "max_tokens": 3})
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
        assert client.get("/healthz").status_code == 503
        assert client.get("/readyz").status_code == 503
        after = client.post("/v1/completions", json={"model": "tiny", "prompt": [5], "max_tokens": 3})
        assert after.status_code == 503


def test_ids_past_the_tokenizer_have_no_text() -> None:
    service, _ = fake_service(vocab_size=2048)  # a padded embedding table, as Gemma's
    with TestClient(create_app(service)) as client:
        assert service.wait_ready(10)
        body = {"model": "tiny", "prompt": [1022], "max_tokens": 3, "logprobs": 1}
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["text"] == TOKENIZER.decode([1023])  # 1024 and 1025 have no piece
        assert choice["logprobs"]["tokens"] == [TOKENIZER.decode([1023]), "", ""]


def test_stopping_while_loading_returns_at_once() -> None:
    import threading
    import time

    gate = threading.Event()

    def load() -> FakeEngine:
        gate.wait(10)
        return FakeEngine()

    service, _ = fake_service()
    service._load = load
    started = time.monotonic()
    with TestClient(create_app(service)) as client:
        assert client.get("/readyz").status_code == 503
    assert time.monotonic() - started < 5  # the shutdown did not wait for the load
    gate.set()
    assert service._thread is not None
    service._thread.join(10)
    assert not service._thread.is_alive()
    assert service.scheduler is None  # it never started serving
