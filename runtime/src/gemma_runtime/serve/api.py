"""OpenAI request bodies (the fields we honour; unknown fields are ignored, as OpenAI's own SDKs send
newer ones) and the JSON shapes of responses and errors. Extensions in vLLM's spelling: ``top_k``,
``stop_token_ids``, ``ignore_eos``."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_STRINGS = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The served model's id (see /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=2**31 - 1, description="0 disables; an extension, as in vLLM.")
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOP_STRINGS} stop strings.")
    stop_token_ids: list[int] | None = Field(None, max_length=64)
    ignore_eos: bool = Field(False, description="Keep generating past end-of-sequence (benchmarks).")
    seed: int | None = Field(None, ge=0, lt=2**63)


class CompletionRequest(_Body):
    prompt: str | list[int] = Field(min_length=1, description="Text, or token ids.")
    logprobs: int | None = Field(None, ge=0, le=5, description="Alternatives per token, up to 5.")
    echo: Literal[False] = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=5)


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    return stops


def error_body(message: str, *, param: str | None, kind: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error document: the official clients read ``error.message`` and ``error.param``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(reason: str) -> str:
    """Ours to OpenAI's vocabulary ("cancelled" only reaches a client while the server stops)."""
    return {"stop": "stop", "length": "length"}.get(reason, "abort")
