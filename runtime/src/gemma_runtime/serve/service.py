"""The server's back end: loads the engine on a background thread (so /healthz answers during a long
load), runs the scheduler loop, and turns a request into an async stream of events for the HTTP layer.

The engine thread hands events over with ``loop.call_soon_threadsafe``; nothing on it ever waits for
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from gemma_runtime.serve.interface import Engine
from gemma_runtime.serve.metrics import ServeMetrics
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import Request, Scheduler
from gemma_runtime.serve.text import TextStream
from gemma_runtime.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Token:
    """One generated token as the client sees it: the text it released (maybe empty while a stop string
    or a character is incomplete), its id and log-probabilities."""

    text: str
    id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclasses.dataclass
class Finished:
    reason: str  # "stop", "length" or "cancelled"
    text: str  # held-back text released at the end
    prompt_tokens: int
    completion_tokens: int


Event = Token | Finished


class _Sink:
    """Detokenizes on the engine thread and posts events onto the request's asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: TextStream, prompt_tokens: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.stream = stream
        self.prompt_tokens = prompt_tokens
        self.request: Request | None = None  # set once queued; its count includes a stop token

    def _post(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the client is long gone
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def token(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
        text, stopped = self.stream.push(token)
        self._post(Token(text, token, logprob, top))
        return stopped

    def finish(self, reason: str) -> None:
        generated = self.request.generated if self.request else 0
        self._post(Finished(reason, self.stream.flush(), self.prompt_tokens, generated))


class Service:
    """One model behind a scheduler. ``load`` builds the engine (and warms it up) on a thread."""

    def __init__(
        self,
        *,
        model_name: str,
        tokenizer: Tokenizer,
        load: Callable[[], Engine],
        max_queued: int,
        defaults: SamplingParams,
        default_max_tokens: int,
        empty_thought: bool = False,
    ) -> None:
        if empty_thought and not tokenizer.gemma4:
            raise ValueError(f"{tokenizer.path}: a Gemma 4 model's chat format needs Gemma 4's tokenizer")
        self.model_name = model_name
        self.tokenizer = tokenizer
        # The variant's Gemma 4 chat template closes an empty thought channel (variants.GEMMA4_EMPTY_THOUGHT).
        self.empty_thought = empty_thought
        self.defaults = defaults
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self.max_queued = max_queued
        self.scheduler: Scheduler | None = None
        self.metrics = ServeMetrics(self._queue_figures)
        self._error: str | None = None  # a failed load
        self._load = load
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def _queue_figures(self) -> tuple[int, int, int]:
        scheduler = self.scheduler
        if scheduler is None:
            return 0, 0, 0
        return len(scheduler.waiting), scheduler.running, scheduler.engine.slots

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.alive

    @property
    def error(self) -> str | None:
        """Why the engine stopped serving (its load or a step failed), or None."""
        scheduler = self.scheduler
        return self._error or (scheduler.failure if scheduler is not None else None)

    @property
    def alive(self) -> bool:
        return self.error is None and (self._thread is None or self._thread.is_alive())

    @property
    def max_len(self) -> int:
        return self.scheduler.engine.max_len if self.scheduler else 0

    def start(self) -> None:
        if self._thread is not None:  # already started (a test may start it before the app's lifespan)
            return
        self._thread = threading.Thread(target=self._main, name="engine", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _main(self) -> None:
        try:
            started = time.monotonic()
            engine = self._load()
            if self._stopped.is_set():  # the server stopped while the weights were loading
                return
            placement = getattr(engine, "device_memory", None)  # the tests' fake engine has no devices
            if placement is not None:
                mesh, weights, cache = placement()
                self.metrics.engine_built(mesh, weights, cache, getattr(engine, "warm_up_seconds", None))
            self.metrics.engine_shape(engine.slots, engine.max_len)
            scheduler = Scheduler(engine, max_queued=self.max_queued, observer=self.metrics)
            self.scheduler = scheduler
            log.info("engine ready in %.1f s (%d slots)", time.monotonic() - started, engine.slots)
            self._ready.set()
            scheduler.run()
        except Exception as err:
            log.exception("the engine failed")
            self._error = f"{type(err).__name__}: {err}"

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what is still running and end the engine thread. A load still in progress is not
        waited for (a compile cannot be interrupted; the thread is a daemon and never starts serving)."""
        self._stopped.set()
        if self.scheduler is not None:
            self.scheduler.stop()
            if self._thread is not None:
                self._thread.join(timeout)

    def generate(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        sampling: SamplingParams,
        stop: Sequence[str] = (),
        stop_tokens: frozenset[int] = frozenset(),
    ) -> tuple[Request, AsyncIterator[Event]]:
        """Queue a request; raises QueueFullError, ShuttingDownError or ValueError (bad length). The
        caller must ``cancel`` the request if it stops reading early."""
        scheduler = self.scheduler
        if scheduler is None:
            raise RuntimeError("the engine is not loaded yet")
        sink = _Sink(asyncio.get_running_loop(), TextStream(self.decode, stop), len(prompt))
        request = Request(prompt, max_tokens, sink, sampling, stop_tokens)
        sink.request = request
        scheduler.submit(request)
        return request, _events(sink.queue)

    def decode(self, ids: Iterable[int]) -> str:
        # A model's embedding may have more rows than the tokenizer has pieces (Gemma pads its table);
        # an id past the tokenizer has no text.
        size = self.tokenizer.vocab_size
        return self.tokenizer.decode([i for i in ids if 0 <= i < size])

    def cancel(self, request: Request) -> None:
        if self.scheduler is not None:
            self.scheduler.cancel(request)


async def _events(queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
    while True:
        event = await queue.get()
        yield event
        if isinstance(event, Finished):
            return
