"""Continuous batching on the host: admit waiting requests into free slots between engine steps, retire
finished ones at once, and feed every step with all decoding slots plus a chunk of prompt tokens.

Fairness: admission is first come, first served; a step's prompt budget (``max_prefill`` tokens, from at
most ``max_segments`` prompts) goes round-robin over the slots still prefilling, so a long prompt is cut
into pieces and never holds up a short one for more than a step,
and decoding slots advance every step whatever is being prefilled. Nothing here touches JAX: the engine
does the arithmetic, the scheduler only updates host state (JetStream's rule).

Data shards: an engine's slots are split into ``engine.shards`` equal groups, each computed by its own
devices. A new request takes a free slot on the least-loaded shard, so work spreads over them, and each
shard has its own prompt budget and round-robin every step.

Threads: ``submit`` and ``cancel`` are called from the server's event loop; ``run`` loops on its own
thread. Sinks are called on the engine thread and must only hand results over (never block).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Protocol

import numpy as np

from gemma_runtime.serve.interface import Chunk, Engine, StepResult, StepWork
from gemma_runtime.serve.sampling import SamplingParams

log = logging.getLogger(__name__)
GREEDY = SamplingParams(temperature=0.0)


class QueueFullError(RuntimeError):
    """Too many requests are waiting; retry after ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: float) -> None:
        super().__init__(f"{waiting} requests are already waiting; retry later")
        self.retry_after = retry_after


class ShuttingDownError(RuntimeError):
    """The server is stopping and takes no new requests."""


class Sink(Protocol):
    """Where a request's output goes. ``token`` returns True when the text reached a stop string."""

    def token(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool: ...

    def finish(self, reason: str) -> None: ...


class Observer(Protocol):
    """Metrics hooks, called on the engine thread."""

    def step(self, generated: int, prompt_tokens: int, seconds: float) -> None: ...

    def finished(self, request: Request) -> None: ...


@dataclasses.dataclass(eq=False)
class Request:
    """One generation. Finish reasons: "stop" (stop token or string), "length" (max_tokens),
    "cancelled" (client gone or server stopping), "error" (the engine failed)."""

    prompt: list[int]
    max_tokens: int
    sink: Sink
    sampling: SamplingParams = GREEDY
    stop_tokens: frozenset[int] = frozenset()
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: int = 0
    finish_reason: str | None = None
    cancelled: bool = False


@dataclasses.dataclass(eq=False)
class _Active:
    request: Request
    prefilled: int = 0  # prompt tokens already in the cache
    next_token: int = 0  # the last sampled token, fed at next_position in the next step
    next_position: int = 0

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.request.prompt)


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        max_queued: int,
        observer: Observer | None = None,
        seed: int | None = None,
    ) -> None:
        self.engine = engine
        self.max_queued = max_queued
        self.observer = observer
        self.slots: list[_Active | None] = [None] * engine.slots
        self.waiting: collections.deque[Request] = collections.deque()
        self._cancelled: list[Request] = []
        self._wake = threading.Condition()
        self._stopping = False
        self.failure: str | None = None  # why the engine failed, set before any request hears of it
        self._per_shard = engine.slots // engine.shards
        self._next_prefill = [0] * engine.shards  # per shard, the local slot to look at first
        self._seeds = np.random.default_rng(seed)
        b = engine.slots
        self._temperature = np.zeros(b, np.float32)
        self._top_k = np.zeros(b, np.int32)
        self._top_p = np.ones(b, np.float32)
        self._seed = np.zeros(b, np.uint32)
        self.step_seconds = 0.05  # a running mean, for Retry-After

    # -- called from the server ------------------------------------------------------------------

    def validate(self, prompt: list[int], max_tokens: int) -> None:
        """Raise ValueError naming the field when a request can never run on this engine."""
        if not prompt:
            raise ValueError("prompt: must hold at least one token")
        if max_tokens < 1:
            raise ValueError("max_tokens: must be at least 1")
        if len(prompt) + max_tokens > self.engine.max_len:
            raise ValueError(
                f"max_tokens: the prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"the maximum sequence length of {self.engine.max_len} tokens"
            )

    def submit(self, request: Request) -> None:
        self.validate(request.prompt, request.max_tokens)
        with self._wake:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down")
            # Requests that a free slot will take at the next step do not count as queued.
            if len(self.waiting) - self.free_slots() >= self.max_queued:
                raise QueueFullError(len(self.waiting), self.retry_after())
            self.waiting.append(request)
            self._wake.notify()

    def cancel(self, request: Request) -> None:
        """Drop a request (its client went away): its slot is free before the next step."""
        with self._wake:
            if request.finish_reason is None and not request.cancelled:
                request.cancelled = True
                self._cancelled.append(request)
                self._wake.notify()

    def free_slots(self) -> int:
        return sum(slot is None for slot in self.slots)

    @property
    def running(self) -> int:
        return self.engine.slots - self.free_slots()

    def retry_after(self) -> float:
        """A guess at when a queued request would start: the queue's turn over the slots."""
        backlog = len(self.waiting) + 1
        return max(1.0, backlog / self.engine.slots * self.step_seconds * 64)

    # -- the engine thread -----------------------------------------------------------------------

    def run(self) -> None:
        """Step until ``stop``; sleeps while there is nothing to do. If the engine fails, every request
        finishes with "error" (no client waits forever) and the exception propagates."""
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._cancelled and self._idle():
                        self._wake.wait()
                    if self._stopping:
                        break
                self.step()
        except BaseException as err:
            with self._wake:
                self._stopping = True  # refuse new requests from now on
                # Before the requests end: a client that sees its error and then asks /healthz must
                # find the server failed.
                self.failure = f"{type(err).__name__}: {err}"
            self._cancel_all("error")
            raise
        self._cancel_all("cancelled")

    def stop(self) -> None:
        """Stop the loop; every request still waiting or running finishes as "cancelled"."""
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _idle(self) -> bool:
        return not self.waiting and self.running == 0

    def step(self) -> None:
        """One round: drop cancelled requests, admit waiting ones, run the engine once, deliver."""
        self._drop_cancelled()
        self._admit()
        work = self._build()
        if work is None:
            return
        started = time.monotonic()
        result = self.engine.step(work)
        seconds = time.monotonic() - started
        self.step_seconds = 0.9 * self.step_seconds + 0.1 * seconds
        generated = self._deliver(work, result)
        if self.observer is not None:
            prompt_tokens = sum(len(chunk.tokens) for chunk in work.chunks)
            self.observer.step(generated, prompt_tokens, seconds)

    def _drop_cancelled(self) -> None:
        with self._wake:
            cancelled, self._cancelled = self._cancelled, []
            for request in cancelled:
                if request in self.waiting:
                    self.waiting.remove(request)
                    self._finish(request, "cancelled")
        for index, active in enumerate(self.slots):
            if active is not None and active.request.cancelled:
                self._retire(index, "cancelled")

    def _admit(self) -> None:
        while (index := self._free_slot()) is not None:
            with self._wake:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            self.engine.insert(index)
            self.slots[index] = _Active(request)
            params = request.sampling
            self._temperature[index] = params.temperature
            self._top_k[index] = min(params.top_k, self.engine.vocab_size)
            self._top_p[index] = params.top_p
            seed = params.seed if params.seed is not None else int(self._seeds.integers(2**32))
            self._seed[index] = seed % 2**32

    def _free_slot(self) -> int | None:
        """The first free slot of the shard running the fewest sequences (the lowest such shard)."""
        best, fewest = None, self._per_shard
        for shard in range(self.engine.shards):
            first = shard * self._per_shard
            group = self.slots[first : first + self._per_shard]
            running = sum(active is not None for active in group)
            if running < fewest:
                best, fewest = first + group.index(None), running
        return best

    def _build(self) -> StepWork | None:
        b = self.engine.slots
        tokens = np.zeros(b, np.int32)
        positions = np.full(b, -1, np.int32)
        counters = np.zeros(b, np.int32)
        for index, active in enumerate(self.slots):
            if active is None:
                continue
            counters[index] = active.request.generated
            if active.decoding:
                tokens[index], positions[index] = active.next_token, active.next_position
        chunks = [chunk for shard in range(self.engine.shards) for chunk in self._next_chunks(shard)]
        if not chunks and not (positions >= 0).any():
            return None
        return StepWork(
            tokens, positions, self._temperature, self._top_k, self._top_p, self._seed, counters, chunks
        )

    def _next_chunks(self, shard: int) -> list[Chunk]:
        """Pieces of prompts for this step on one shard, taking its prefilling slots in turn until the
        shard's budget is spent."""
        b, budget = self._per_shard, self.engine.max_prefill
        first = shard * b
        chunks: list[Chunk] = []
        start = self._next_prefill[shard]
        for offset in range(b):
            if budget == 0 or len(chunks) == self.engine.max_segments:
                break
            index = first + (start + offset) % b
            active = self.slots[index]
            if active is None or active.decoding:
                continue
            prompt, done = active.request.prompt, active.prefilled
            size = min(len(prompt) - done, budget)
            budget -= size
            self._next_prefill[shard] = index - first + 1
            chunks.append(Chunk(index, prompt[done : done + size], done, done + size == len(prompt)))
        return chunks

    def _deliver(self, work: StepWork, result: StepResult) -> int:
        """Hand each sampled token to its request; returns how many tokens were generated."""
        generated = 0
        chunks = {chunk.slot: chunk for chunk in work.chunks}
        for index, active in enumerate(self.slots):
            if active is None:
                continue
            chunk = chunks.get(index)
            if chunk is not None:
                active.prefilled += len(chunk.tokens)
                if not chunk.last:
                    continue
                active.next_position = active.prefilled
            elif not active.decoding or work.positions[index] < 0:
                continue
            generated += 1
            self._emit(index, active, result)
        return generated

    def _emit(self, index: int, active: _Active, result: StepResult) -> None:
        request = active.request
        token = int(result.tokens[index])
        request.generated += 1
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        if token in request.stop_tokens:
            self._retire(index, "stop")
            return
        top = [
            (int(t), float(p))
            for t, p in zip(result.top_tokens[index], result.top_logprobs[index], strict=True)
        ]
        if request.sink.token(token, float(result.logprobs[index]), top):
            self._retire(index, "stop")
        elif request.generated >= request.max_tokens:
            self._retire(index, "length")
        else:
            active.next_token = token
            if active.request.generated > 1:
                active.next_position += 1

    def _retire(self, index: int, reason: str) -> None:
        active = self.slots[index]
        assert active is not None
        self.slots[index] = None
        self._finish(active.request, reason)

    def _finish(self, request: Request, reason: str) -> None:
        request.finish_reason = reason
        request.finished_at = time.monotonic()
        try:
            request.sink.finish(reason)
        finally:
            if self.observer is not None:
                self.observer.finished(request)

    def _cancel_all(self, reason: str) -> None:
        for index, active in enumerate(self.slots):
            if active is not None:
                self._retire(index, reason)
        with self._wake:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for request in waiting:
            self._finish(request, reason)
