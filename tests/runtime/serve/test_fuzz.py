"""Schema-driven fuzzing of the HTTP API: schemathesis generates requests from our own OpenAPI document,
bodies that fit it and bodies that break it, against the app over the fake engine; no request may get a
5xx. Bounded: a fixed number of examples per operation and mode."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from gemma_runtime.serve.server import create_app
from tests.runtime.serve.helpers import fake_service

EXAMPLES = 80


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(mode: GenerationMode) -> None:
    service, _ = fake_service(max_len=128, max_queued=64)
    service.start()  # ready before the first request (the app's lifespan start is then a no-op)
    assert service.wait_ready(10)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models"}
    try:
        for operation in operations:
            if mode == GenerationMode.NEGATIVE and operation.method.upper() != "POST":
                continue  # nothing to break in a GET without parameters

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            def call(case: schemathesis.Case[object]) -> None:
                response = case.call()
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path} {case.body!r} -> {response.status_code}")

            call()
    finally:
        service.stop()
    assert not failures, "\n".join(failures[:10])
