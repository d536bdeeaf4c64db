"""Shared pieces of the serving tests: a model with varied random weights, a reference greedy decode
through the model's own cache, a sink that collects tokens, and a loopback server on a free port."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import uvicorn
from fastapi import FastAPI
from flax import nnx

from gemma_runtime.model import Cache, Transformer, TransformerConfig
from gemma_runtime.model.layers import RMSNorm
from gemma_runtime.serve.fake import FakeEngine
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.service import Service
from gemma_runtime.tokenizer import Tokenizer


def varied_model(config: TransformerConfig, seed: int = 0) -> Transformer:
    """Random weights with non-zero norm scales: a zero-initialised model repeats one token forever,
    which would hide a batching mistake."""
    model = Transformer(config, rngs=nnx.Rngs(seed))
    rng = np.random.RandomState(seed)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, RMSNorm):
            shape = module.scale[...].shape
            module.scale[...] = jnp.asarray(rng.normal(0.0, 1.0, shape).astype(np.float32))
    return model


@nnx.jit
def _one_token(
    model: Transformer, token: jax.Array, position: jax.Array, cache: Cache
) -> tuple[jax.Array, Cache]:
    logits, cache = model(token, position, cache=cache)
    return jnp.argmax(logits[0, -1]), cache


def reference_greedy(model: Transformer, prompt: list[int], steps: int, max_len: int) -> list[int]:
    """Greedy tokens of ``prompt`` alone through the model's own cache, one token per call (one compiled
    shape for every prompt; eager calls would compile each operation for each prompt length)."""
    cache = model.init_cache(1, max_len)
    out: list[int] = []
    tokens = list(prompt)
    for position in range(len(prompt) + steps - 1):
        token = tokens[position] if position < len(prompt) else out[-1]
        best, cache = _one_token(model, jnp.asarray([[token]]), jnp.asarray([[position]]), cache)
        if position >= len(prompt) - 1:
            out.append(int(best))
    return out


@dataclasses.dataclass
class Collect:
    """A scheduler sink that keeps every token; ``stop_after`` ends the text as a stop string would."""

    tokens: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    reason: str | None = None
    stop_after: int | None = None

    def token(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
        self.tokens.append(token)
        self.logprobs.append(logprob)
        return self.stop_after is not None and len(self.tokens) >= self.stop_after

    def finish(self, reason: str) -> None:
        self.reason = reason


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[Any], output: Callable[[], str], timeout: float) -> None:
    """Poll ``url``/readyz until it answers 200; fail with the process's ``output`` if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{output()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.5)


@contextlib.contextmanager
def running_server(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL and stops it after."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def fake_service(
    *,
    slots: int = 4,
    max_len: int = 256,
    max_queued: int = 8,
    step_delay: float = 0.0,
    vocab_size: int = 1024,
) -> tuple[Service, FakeEngine]:
    """A service over the fake engine and the packaged tiny tokenizer, model id "tiny"."""
    engine = FakeEngine(
        slots=slots, max_len=max_len, max_prefill=32, step_delay=step_delay, vocab_size=vocab_size
    )
    service = Service(
        model_name="tiny",
        tokenizer=Tokenizer.tiny(),
        load=lambda: engine,
        max_queued=max_queued,
        defaults=SamplingParams(temperature=0.0),
        default_max_tokens=16,
    )
    return service, engine
