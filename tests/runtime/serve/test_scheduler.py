"""The host-side scheduler over the fake engine, whose output is checkable by hand (each sequence counts
up from its last prompt token): finish reasons, chunked prefill riding with decode steps, round-robin
chunks so a long prompt never starves a short one, data shards filled in turn with a prompt budget
each, a cancelled request frees its slot at once, a full queue refuses, seeds and sampling settings
reach the engine, an engine failure is known before any request ends; and stop strings in streamed text."""

from __future__ import annotations

import threading

import pytest

from gemma_runtime.serve.fake import FakeEngine
from gemma_runtime.serve.interface import StepResult, StepWork
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import QueueFullError, Request, Scheduler
from gemma_runtime.serve.text import TextStream
from tests.runtime.serve.helpers import Collect


def _run(scheduler: Scheduler, sinks: list[Collect], limit: int = 1000) -> None:
    for _ in range(limit):
        if all(s.reason for s in sinks):
            return
        scheduler.step()
    raise AssertionError("requests did not finish")


def test_tokens_count_up_and_finish_for_each_reason() -> None:
    scheduler = Scheduler(FakeEngine(slots=2), max_queued=4)
    length, stop_token, stop_text = Collect(), Collect(), Collect(stop_after=2)
    scheduler.submit(Request([5, 6], 4, length))
    scheduler.submit(Request([10], 10, stop_token, stop_tokens=frozenset({13})))
    scheduler.submit(Request([20], 10, stop_text))
    _run(scheduler, [length, stop_token, stop_text])
    assert (length.tokens, length.reason) == ([7, 8, 9, 10], "length")
    assert (stop_token.tokens, stop_token.reason) == ([11, 12], "stop")  # the stop token is not output
    assert (stop_text.tokens, stop_text.reason) == ([21, 22], "stop")
    assert length.logprobs == [-1.0] * 4


def test_prompt_chunks_ride_with_decode_steps_round_robin() -> None:
    engine = FakeEngine(slots=3, max_prefill=8)
    scheduler = Scheduler(engine, max_queued=4)
    short, long, late = Collect(), Collect(), Collect()
    scheduler.submit(Request([1, 2], 30, short))
    scheduler.step()  # the short prompt in one chunk
    scheduler.submit(Request(list(range(40)), 3, long))  # five chunks of 8
    scheduler.step()
    scheduler.submit(Request([50, 51, 52], 2, late))  # arrives during the long prefill
    _run(scheduler, [short, long, late])
    chunks = [(r.chunks, r.decoding) for r in engine.steps]
    assert chunks[0] == ([(0, 2)], [])
    assert chunks[1] == ([(1, 8)], [0])  # a prompt chunk and a decode token in one step
    assert chunks[2][0] == [(2, 3)]  # the late short prompt goes before the rest of the long one
    assert [c for c, _ in chunks[3:7]] == [[(1, 8)]] * 4
    assert all(0 in decoding for _, decoding in chunks[1:20])  # decoding never paused
    assert long.tokens == [40, 41, 42]
    assert late.tokens == [53, 54]
    assert short.tokens == list(range(3, 33))


def test_short_prompts_share_a_step_within_the_budget() -> None:
    engine = FakeEngine(slots=4, max_prefill=16, max_segments=3)
    scheduler = Scheduler(engine, max_queued=4)
    sinks = [Collect() for _ in range(4)]
    for n, sink in enumerate(sinks):
        scheduler.submit(Request([10 * n + 1] * (5 + n), 2, sink))  # 5, 6, 7 and 8 tokens
    _run(scheduler, sinks)
    assert engine.steps[0].chunks == [(0, 5), (1, 6), (2, 5)]  # 16 tokens from three prompts
    assert engine.steps[1].chunks == [(3, 8), (2, 2)]  # round-robin: the fourth, then the rest of the third
    assert engine.steps[1].decoding == [0, 1]
    assert [s.tokens for s in sinks] == [[2, 3], [12, 13], [22, 23], [32, 33]]


def test_data_shards_get_new_requests_in_turn_and_each_its_own_prompt_budget() -> None:
    """Slots 0-1 are shard 0, slots 2-3 shard 1: a new request goes to the least-loaded shard, and each
    shard's prompts are chunked within its own budget and round-robin."""
    engine = FakeEngine(slots=4, shards=2, max_prefill=8)
    scheduler = Scheduler(engine, max_queued=4)
    long, short, tiny = Collect(), Collect(), Collect()
    scheduler.submit(Request(list(range(100, 112)), 2, long))  # 12 tokens: two chunks
    scheduler.submit(Request([7] * 5, 2, short))
    scheduler.submit(Request([9] * 3, 2, tiny))
    _run(scheduler, [long, short, tiny])
    assert engine.inserted == [0, 2, 1]  # shard 0, shard 1, then shard 0 again (a tie: the lowest)
    assert engine.steps[0].chunks == [(0, 8), (2, 5)]  # a full budget on each shard in one step
    assert engine.steps[1].chunks == [(1, 3)]
    assert engine.steps[1].decoding == [2]
    assert engine.steps[2].chunks == [(0, 4)]  # shard 0's round-robin came back to the long prompt
    assert [long.tokens, short.tokens, tiny.tokens] == [[112, 113], [8, 9], [10, 11]]


def test_cancel_frees_the_slot_before_the_next_step() -> None:
    engine = FakeEngine(slots=1)
    scheduler = Scheduler(engine, max_queued=4)
    first, second = Collect(), Collect()
    first_request = Request([1], 100, first)
    scheduler.submit(first_request)
    scheduler.submit(Request([7], 2, second))
    scheduler.step()
    scheduler.step()
    scheduler.cancel(first_request)
    scheduler.step()
    assert first.reason == "cancelled"
    assert engine.steps[-1].chunks == [(0, 1)]  # the waiting request took the slot at once
    _run(scheduler, [second])
    assert second.tokens == [8, 9]


def test_a_full_queue_refuses_with_a_retry_hint() -> None:
    scheduler = Scheduler(FakeEngine(slots=1), max_queued=1)
    scheduler.submit(Request([1], 5, Collect()))
    scheduler.submit(Request([1], 5, Collect()))  # one for the free slot, one queued
    with pytest.raises(QueueFullError) as refused:
        scheduler.submit(Request([1], 5, Collect()))
    assert refused.value.retry_after >= 1


def test_lengths_are_checked_against_the_engine() -> None:
    scheduler = Scheduler(FakeEngine(slots=1, max_len=16), max_queued=1)
    with pytest.raises(ValueError, match="max_tokens"):
        scheduler.submit(Request([1] * 10, 7, Collect()))
    with pytest.raises(ValueError, match="prompt"):
        scheduler.submit(Request([], 7, Collect()))


def test_sampling_settings_and_seeds_reach_the_engine() -> None:
    engine = FakeEngine(slots=2)
    seen = []
    step = engine.step

    def spy(work):
        seen.append((work.temperature.copy(), work.top_k.copy(), work.seeds.copy(), work.counters.copy()))
        return step(work)

    engine.step = spy
    scheduler = Scheduler(engine, max_queued=2)
    sink = Collect()
    scheduler.submit(Request([1], 3, sink, SamplingParams(temperature=0.7, top_k=5, seed=42)))
    _run(scheduler, [sink])
    temperature, top_k, seeds, _counters = seen[-1]
    assert float(temperature[0]) == pytest.approx(0.7)
    assert (int(top_k[0]), int(seeds[0])) == (5, 42)
    assert [int(c[0]) for *_, c in seen] == [0, 1, 2]  # the draw index of each token


def test_the_run_loop_serves_from_another_thread_and_stops_cleanly() -> None:
    scheduler = Scheduler(FakeEngine(slots=2, step_delay=0.001), max_queued=8)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    done = threading.Event()

    class Sink(Collect):
        def finish(self, reason: str) -> None:
            super().finish(reason)
            done.set()

    sink, endless = Sink(), Collect()
    scheduler.submit(Request([3], 5, sink))
    assert done.wait(10)
    scheduler.submit(Request([3], 400, endless))
    scheduler.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert sink.tokens == [4, 5, 6, 7, 8]
    assert endless.reason == "cancelled"


def test_an_engine_failure_is_recorded_before_any_request_hears_of_it() -> None:
    """A client that gets its error and then asks /healthz must find the server failed."""

    class Broken(FakeEngine):
        def step(self, work: StepWork) -> StepResult:
            raise RuntimeError("device lost")

    scheduler = Scheduler(Broken(slots=2), max_queued=8)
    seen: list[str | None] = []

    class Sink(Collect):
        def finish(self, reason: str) -> None:
            seen.append(scheduler.failure)
            super().finish(reason)

    sink = Sink()
    scheduler.submit(Request([3], 5, sink))
    with pytest.raises(RuntimeError, match="device lost"):
        scheduler.run()
    assert sink.reason == "error"
    assert seen == ["RuntimeError: device lost"]


def _pieces(tokens: list[str], stops: list[str]) -> tuple[list[str], bool, str]:
    table = dict(enumerate(tokens))
    stream = TextStream(lambda ids: "".join(table[i] for i in ids), stops)
    out, stopped = [], False
    for i in range(len(tokens)):
        piece, stopped = stream.push(i)
        out.append(piece)
        if stopped:
            break
    return out, stopped, stream.flush()


def test_stop_strings_hold_back_text_that_may_start_one() -> None:
    pieces, stopped, rest = _pieces(["Hel", "lo E", "ND more"], ["END"])
    assert stopped
    assert "".join(pieces) + rest == "Hello "
    assert pieces[0] == "H"  # "el" might still begin "END"
    pieces, stopped, rest = _pieces(["a", "b\ufffd", "c"], [])
    assert pieces == ["a", "", "b\ufffdc"] or "".join(pieces) + rest == "ab\ufffdc"
    assert not stopped
