"""A fake engine whose output can be checked by hand: every sequence counts up from its last prompt
token, ``next = (previous + 1) % vocab_size``, with log-probability -1 (and alternatives -2, -3, ...).

It keeps the real engine's contract (slots split into ``shards`` equal groups, a prompt budget per step
and shard shared by up to ``max_segments`` prompts, one step for every decoding slot plus the prompt
pieces, checked) and records each step, so scheduler
and server tests can check batching without JAX. An optional delay per step stands in for the model's
time.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from gemma_runtime.serve.interface import TOP_LOGPROBS, StepResult, StepWork


@dataclasses.dataclass
class StepRecord:
    decoding: list[int]  # the slots that decoded
    chunks: list[tuple[int, int]]  # (slot, tokens) of each prompt piece


class FakeEngine:
    def __init__(
        self,
        *,
        slots: int = 4,
        max_len: int = 512,
        max_prefill: int = 64,
        max_segments: int = 1,
        shards: int = 1,
        vocab_size: int = 1024,
        step_delay: float = 0.0,
    ) -> None:
        if slots % shards:
            raise ValueError(f"slots {slots} is not a multiple of shards {shards}")
        self.slots, self.max_len, self.max_prefill, self.vocab_size = slots, max_len, max_prefill, vocab_size
        self.max_segments, self.shards = max_segments, shards
        self.step_delay = step_delay
        self.steps: list[StepRecord] = []
        self.inserted: list[int] = []
        self._last = np.zeros(slots, np.int64)  # each slot's last prompt token, for its first output
        self._lock = threading.Lock()

    def insert(self, slot: int) -> None:
        with self._lock:
            self.inserted.append(slot)

    def warm_up(self) -> float:
        return 0.0

    def step(self, work: StepWork) -> StepResult:
        if self.step_delay:
            time.sleep(self.step_delay)
        for shard in range(self.shards):
            mine = [c for c in work.chunks if c.slot // (self.slots // self.shards) == shard]
            if len(mine) > self.max_segments or sum(len(c.tokens) for c in mine) > self.max_prefill:
                raise ValueError(f"shard {shard}: chunks over the budget: {mine}")
        previous = work.tokens.astype(np.int64)
        for chunk in work.chunks:
            previous[chunk.slot] = chunk.tokens[-1]
        tokens = ((previous + 1) % self.vocab_size).astype(np.int32)
        with self._lock:
            decoding = [int(s) for s in np.flatnonzero(work.positions >= 0)]
            self.steps.append(StepRecord(decoding, [(c.slot, len(c.tokens)) for c in work.chunks]))
        top_tokens = (tokens[:, None] + np.arange(TOP_LOGPROBS)[None, :]) % self.vocab_size
        top_logprobs = -1.0 - np.arange(TOP_LOGPROBS, dtype=np.float32)[None, :].repeat(self.slots, 0)
        return StepResult(
            tokens, np.full(self.slots, -1.0, np.float32), top_tokens.astype(np.int32), top_logprobs
        )
