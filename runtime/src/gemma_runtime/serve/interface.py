"""What passes between the host-side scheduler and an engine: plain NumPy, no JAX, so the scheduler and
the fake engine stay on the host."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

TOP_LOGPROBS = 5  # alternatives returned per token (OpenAI allows up to 5 on completions)


@dataclasses.dataclass
class Chunk:
    """Part of one slot's prompt: ``tokens`` sit at positions ``start, start + 1, ...``. ``last`` marks
    the prompt's final chunk: its step samples the sequence's first token."""

    slot: int
    tokens: list[int]
    start: int
    last: bool


@dataclasses.dataclass
class StepWork:
    """Host-side inputs of one step, per slot ([B] arrays): the token to feed and its position (-1 = the
    slot does not decode this step), and the slot's sampling settings; plus prompt chunks.
    ``counters`` number each sequence's draws, so a seeded request draws the same tokens in any batch.
    The slots are split into ``Engine.shards`` equal groups (data shards: slot // (B / shards)); each
    shard's prompt chunks (at most ``Engine.max_segments``, of different slots) hold at most
    ``Engine.max_prefill`` tokens together."""

    tokens: np.ndarray  # [B] int32
    positions: np.ndarray  # [B] int32
    temperature: np.ndarray  # [B] float32
    top_k: np.ndarray  # [B] int32
    top_p: np.ndarray  # [B] float32
    seeds: np.ndarray  # [B] uint32
    counters: np.ndarray  # [B] int32
    chunks: list[Chunk] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StepResult:
    """Per slot ([B] and [B, TOP_LOGPROBS]): the sampled token, its log-probability and the most likely
    alternatives. Rows of slots that neither decoded nor finished a prompt this step are meaningless."""

    tokens: np.ndarray
    logprobs: np.ndarray
    top_tokens: np.ndarray
    top_logprobs: np.ndarray


class Engine(Protocol):
    """What the scheduler needs from an engine; :class:`ModelEngine` and the tests' fake implement it."""

    slots: int
    shards: int  # data shards: equal groups of slots, each with its own prompt budget
    max_len: int
    max_prefill: int  # prompt tokens per step and shard
    max_segments: int  # prompts whose pieces may share a step, per shard
    vocab_size: int

    def insert(self, slot: int) -> None:
        """Give ``slot`` to a new sequence (forget what it held)."""

    def step(self, work: StepWork) -> StepResult:
        """Run one step and return the sampled tokens."""
