"""The OpenAI-compatible HTTP API (FastAPI): /v1/completions, /v1/chat/completions (both with SSE
streaming), /v1/models, plus /healthz, /readyz, /metrics (Prometheus) and /stats (JSON for the operator).

A client's mistake is a 400 with OpenAI's error document naming the field, never a 500; a full queue is
a 429 with Retry-After; a client that goes away cancels its request, freeing its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from gemma_runtime import __version__
from gemma_runtime.serve import api
from gemma_runtime.serve.api import ChatRequest, CompletionRequest
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import QueueFullError, ShuttingDownError
from gemma_runtime.serve.scheduler import Request as Generation
from gemma_runtime.serve.service import Event, Finished, Service, Token

DISCONNECT_POLL_S = 0.25


class ClientError(Exception):
    """A 4xx answer in OpenAI's format."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.param, self.status, self.code, self.headers = param, status, code, headers


def _error(status: int, message: str, param: str | None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return JSONResponse(api.error_body(message, param=param, kind=kind, code=code), status_code=status)


def _param_of(error: dict[str, Any]) -> str | None:
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    # Union members appear in the location (e.g. prompt.str): keep the field path only.
    names = [p for p in loc if p not in {"str", "list[int]", "list[str]", "int", "float", "bool"}]
    return ".".join(names) or None


def create_app(service: Service) -> FastAPI:
    """The ASGI application over ``service`` (started and stopped with the app's lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="gemma-runtime", version=__version__, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = _param_of(first)
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", "body")
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        return _error(400, message, param)

    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> JSONResponse:
        response = _error(exc.status, str(exc), exc.param, exc.code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        if not service.alive:
            return PlainTextResponse(f"engine failed: {service.error}", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if not service.ready:
            return PlainTextResponse("loading", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/stats")
    async def stats() -> dict[str, float | int]:
        return service.metrics.stats()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": service.model_name, "object": "model", "created": service.created, "owned_by": "gemma"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: Request) -> Response:
        _check_model(service, body.model)
        if isinstance(body.prompt, str):
            prompt = service.tokenizer.encode(body.prompt)
        else:
            prompt = body.prompt
            vocab = service.tokenizer.vocab_size
            if any(not 0 <= t < vocab for t in prompt):
                raise ClientError(f"prompt: token ids must be in [0, {vocab})", param="prompt")
        generation, events = _start(service, body, prompt, body.max_tokens)
        formatter = _CompletionFormat(service, body.logprobs)
        return await _respond(service, http, generation, events, fmt=formatter, stream=body.stream)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, http: Request) -> Response:
        _check_model(service, body.model)
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        try:
            prompt = service.tokenizer.encode_chat(messages, empty_thought=service.empty_thought)
        except ValueError as err:
            raise ClientError(f"messages: {err}", param="messages") from None
        top = (body.top_logprobs or 0) if body.logprobs else None
        generation, events = _start(service, body, prompt, body.max_completion_tokens or body.max_tokens)
        fmt = _ChatFormat(service, top)
        return await _respond(service, http, generation, events, fmt=fmt, stream=body.stream)

    return app


def _check_model(service: Service, model: str) -> None:
    if model != service.model_name:
        raise ClientError(
            f"model: {model!r} is not served here; this server serves {service.model_name!r}",
            param="model",
            code="model_not_found",
        )
    if not service.alive:
        raise ClientError(f"the engine failed: {service.error}", status=503)
    if not service.ready:
        raise ClientError(
            "the model is still loading; retry shortly", status=503, headers={"Retry-After": "5"}
        )


def _start(
    service: Service, body: api._Body, prompt: list[int], max_tokens: int | None
) -> tuple[Generation, AsyncIterator[Event]]:
    try:
        stops = api.stop_strings(body.stop)
    except ValueError as err:
        raise ClientError(str(err), param="stop") from None
    defaults = service.defaults
    try:
        sampling = SamplingParams(
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_k=defaults.top_k if body.top_k is None else body.top_k,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            seed=body.seed,
        )
    except ValueError as err:
        raise ClientError(str(err), param=str(err).split(" ")[0]) from None
    tokenizer = service.tokenizer
    stop_tokens = frozenset(body.stop_token_ids or ()) | (
        frozenset() if body.ignore_eos else frozenset(tokenizer.stop_ids)
    )
    if max_tokens is None:
        max_tokens = max(1, min(service.default_max_tokens, service.max_len - len(prompt)))
    if len(prompt) >= service.max_len:
        raise ClientError(
            f"prompt: {len(prompt)} tokens; the limit is {service.max_len - 1} (prompt plus completion "
            f"at most {service.max_len})",
            param="prompt",
            code="context_length_exceeded",
        )
    try:
        return service.generate(
            prompt, max_tokens=max_tokens, sampling=sampling, stop=stops, stop_tokens=stop_tokens
        )
    except QueueFullError as err:
        retry = str(math.ceil(err.retry_after))
        raise ClientError(str(err), status=429, headers={"Retry-After": retry}) from None
    except ShuttingDownError as err:
        raise ClientError(str(err), status=503, headers={"Retry-After": "5"}) from None
    except ValueError as err:
        raise ClientError(str(err), param=str(err).split(":")[0]) from None


class _CompletionFormat:
    """/v1/completions documents."""

    object, chunk_object, prefix = "text_completion", "text_completion", "cmpl"

    def __init__(self, service: Service, logprobs: int | None) -> None:
        self.service = service
        self.logprobs = logprobs
        self.id = api.new_id(self.prefix)
        self.created = api.now()

    def _logprobs(self, tokens: list[Token], offset: int) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        decode = self.service.decode
        offsets, position = [], offset
        for token in tokens:
            offsets.append(position)
            position += len(token.text)
        return {
            "tokens": [decode([t.id]) for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [
                {decode([i]): p for i, p in t.top[: self.logprobs]} if self.logprobs else None for t in tokens
            ],
            "text_offset": offsets,
        }

    def choice(self, text: str, tokens: list[Token], reason: str | None, offset: int) -> dict[str, Any]:
        return {
            "index": 0,
            "text": text,
            "logprobs": self._logprobs(tokens, offset),
            "finish_reason": reason,
        }

    def document(self, choice: dict[str, Any], usage: dict[str, int] | None, chunk: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "object": self.chunk_object if chunk else self.object,
            "created": self.created,
            "model": self.service.model_name,
            "choices": [choice],
        }
        if usage is not None:
            doc["usage"] = usage
        return doc

    def first_chunk(self) -> dict[str, Any] | None:
        return None


class _ChatFormat(_CompletionFormat):
    """/v1/chat/completions documents."""

    object, chunk_object, prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def _logprobs(self, tokens: list[Token], offset: int) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        decode = self.service.decode

        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            text = decode([token_id])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        content = [
            {**entry(t.id, t.logprob), "top_logprobs": [entry(i, p) for i, p in t.top[: self.logprobs]]}
            for t in tokens
        ]
        return {"content": content}

    def choice(self, text: str, tokens: list[Token], reason: str | None, offset: int) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": self._logprobs(tokens, offset),
            "finish_reason": reason,
        }

    def delta(self, text: str, tokens: list[Token], reason: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"content": text} if text or tokens else {},
            "logprobs": self._logprobs(tokens, 0),
            "finish_reason": reason,
        }

    def first_chunk(self) -> dict[str, Any] | None:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return self.document(choice, None, chunk=True)


async def _respond(
    service: Service,
    http: Request,
    generation: Generation,
    events: AsyncIterator[Event],
    *,
    fmt: _CompletionFormat,
    stream: bool,
) -> Response:
    if stream:
        return StreamingResponse(
            _stream(service, generation, events, fmt),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    tokens: list[Token] = []
    finished: Finished | None = None
    try:
        async for event in _until_disconnected(http, events):
            if isinstance(event, Token):
                tokens.append(event)
            else:
                finished = event
    finally:
        if finished is None:
            service.cancel(generation)
    if finished is None:  # the client went away
        return Response(status_code=499)
    if finished.reason == "cancelled":
        raise ClientError("the server is shutting down", status=503, headers={"Retry-After": "5"})
    if finished.reason == "error":
        raise ClientError("the engine failed; see the server log", status=500)
    text = "".join(t.text for t in tokens) + finished.text
    choice = fmt.choice(text, tokens, api.finish_reason(finished.reason), 0)
    usage = api.usage(finished.prompt_tokens, finished.completion_tokens)
    return JSONResponse(fmt.document(choice, usage, chunk=False))


async def _until_disconnected(http: Request, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """The request's events, ending early when the client disconnects (checked every
    ``DISCONNECT_POLL_S``, whether or not tokens are arriving)."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Task[Event] | None = None
    iterator = aiter(events)
    checked = loop.time()
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=DISCONNECT_POLL_S)
            if done:
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield event
                if isinstance(event, Finished):
                    return
            if loop.time() - checked >= DISCONNECT_POLL_S:
                checked = loop.time()
                if await http.is_disconnected():
                    return
    finally:
        if pending is not None:
            pending.cancel()


def _sse(document: dict[str, Any]) -> str:
    return f"data: {json.dumps(document)}\n\n"


async def _stream(
    service: Service, generation: Generation, events: AsyncIterator[Event], fmt: _CompletionFormat
) -> AsyncIterator[str]:
    """SSE: one chunk per released piece of text, a last chunk with the finish reason, then [DONE]. When
    the client disconnects Starlette cancels this generator, and the request is cancelled with it."""
    delta: Callable[[str, list[Token], str | None], dict[str, Any]]
    if isinstance(fmt, _ChatFormat):
        delta = fmt.delta
    else:
        offset = 0

        def delta(text: str, tokens: list[Token], reason: str | None) -> dict[str, Any]:
            nonlocal offset
            choice = fmt.choice(text, tokens, reason, offset)
            offset += len(text)
            return choice

    finished: Finished | None = None
    try:
        first = fmt.first_chunk()
        if first is not None:
            yield _sse(first)
        async for event in events:
            if isinstance(event, Token):
                if event.text or fmt.logprobs is not None:
                    yield _sse(fmt.document(delta(event.text, [event], None), None, chunk=True))
                continue
            finished = event
            if finished.text:
                yield _sse(fmt.document(delta(finished.text, [], None), None, chunk=True))
            usage = api.usage(finished.prompt_tokens, finished.completion_tokens)
            last = delta("", [], api.finish_reason(finished.reason))
            yield _sse(fmt.document(last, usage, chunk=True))
        yield "data: [DONE]\n\n"
    finally:
        if finished is None:
            service.cancel(generation)
