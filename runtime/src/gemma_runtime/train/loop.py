"""`gemma-runtime train`: run the steps with progress, metrics and preemption-safe checkpoints.

A run resumes from the latest checkpoint when there is one. SIGTERM (preemption, pod deletion) makes
it save the current step and leave with INTERRUPTED_EXIT_CODE, which the operator's Job failure policy
turns into a restart of the slice that resumes from that checkpoint. A checkpoint is reported (log,
``/progress``, metric) once committed, not when its asynchronous save starts. When the run ends,
process 0 writes its final figures (the ``/progress`` document) as the container's termination message,
which the operator reads once the process, and its ``/progress``, are gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from gemma_runtime import compilation
from gemma_runtime.checkpoint import store
from gemma_runtime.config import TrainConfig
from gemma_runtime.endpoints import write_message
from gemma_runtime.parallel.sharding import batch_sharding
from gemma_runtime.train import data, flops, lora, progress, setup, step
from gemma_runtime.train.checkpoints import Checkpoints

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Result:
    steps: int  # the step the run ended at
    losses: dict[int, float]  # logged step -> loss
    interrupted: bool = False
    checkpoint: str | None = None


class Stop:
    """Set by SIGTERM (or a test): the loop saves and leaves after the current step. In a run of several
    processes, one process's request stops them all at the same step (the save is collective: a process
    saving alone would wait for the others until the kubelet kills it)."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def agreed(self) -> bool:
        """Whether any process was asked to stop; every process calls it once per step."""
        requested = self.requested.is_set()
        if jax.process_count() == 1:
            return requested
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array([requested]))))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: self.requested.set())
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass
class Options:
    metrics_file: Path | None = None  # one JSON object per logged step (process 0)
    log_every: int = 10
    show_bar: bool | None = None  # None: when stderr is a terminal
    message_file: Path | None = None  # the final figures as JSON (process 0; /dev/termination-log in a pod)


class Training:
    """One process's part of a training: built by the constructor, driven by ``run``."""

    def __init__(self, config: TrainConfig, options: Options | None = None) -> None:
        self.config, self.options, h = config, options or Options(), config.training
        self.devices = jax.devices()
        self.mesh = setup.mesh_for(config, self.devices)
        self.first = jax.process_index() == 0
        tokenizer = setup.tokenizer_for(config)
        self.packed = data.load(
            Path(config.data.path), config.data.format, config.data.text_field, tokenizer, h.sequence_length
        )
        self.dataset = data.Dataset(self.packed, h.global_batch_size, h.seed)
        self.graphdef, params, self.shape = setup.build_model(config, self.mesh)
        setup.check_vocab(tokenizer, self.shape)
        self.lora: lora.Settings | None = None
        self.frozen: Any = {}
        trainable = params
        if h.lora is not None:
            self.lora = lora.settings(params, h.lora.rank, h.lora.alpha)
            replicated = NamedSharding(self.mesh, PartitionSpec())
            adapters = lora.init(params, self.lora, jax.random.key(h.seed))
            trainable, self.frozen = jax.device_put(adapters, replicated), params
        trainer = step.Trainer(
            self.graphdef, step.optimizer(h), step.schedule(h), h.gradient_accumulation_steps, self.lora
        )
        self.state = step.init_state(trainer, trainable, self.mesh)
        self.batches = batch_sharding(self.mesh)
        self.step_fn = step.compile_step(trainer, self.state, self.frozen, self.batches, self.mesh)
        policy = config.checkpoints
        self.ckpts = (
            Checkpoints(policy.directory, interval=policy.interval_steps, keep=policy.keep)
            if policy.directory
            else None
        )
        self.tokens_per_step = h.global_batch_size * h.sequence_length
        self.flops_per_token = flops.train_flops_per_token(self.shape, h.sequence_length)
        self.metrics = progress.Metrics()
        self.figures = progress.Figures(name=config.name, total_steps=h.steps)
        self.server: progress.Server | None = None
        self.result = Result(steps=0, losses={})
        self.last_loss: float | None = None

    @functools.cached_property
    def peak(self) -> float:
        return flops.peak_flops(self.devices)

    def resume(self) -> int:
        """The step to start from: the latest checkpoint's, or 0."""
        if self.ckpts is None or self.config.checkpoints.resume == "never":
            return 0
        latest = self.ckpts.latest()
        if latest is None:
            return 0
        self.state, meta = self.ckpts.restore(latest, self.state)
        start = int(jax.device_get(self.state["step"]))
        position = meta.get("data", {})
        log.info(
            "resumed from %s at step %d (data epoch %.2f)",
            self.ckpts.uri(latest),
            start,
            position.get("epoch", 0.0),
        )
        if position.get("rows") not in (None, self.packed.rows):
            log.warning(
                "the dataset changed since the checkpoint (%s rows, now %d): batches differ",
                position["rows"],
                self.packed.rows,
            )
        return start

    def run(self, stop: Stop | None = None) -> Result:
        stop, total = stop or Stop(), self.config.training.steps
        start = self.resume()
        self.result.steps = start
        self.metrics.total.set(total)
        self.metrics.step.set(start)
        self._tell(step=start, state="Running")
        if self.first and self.config.port:
            self.server = progress.Server(self.config.host, self.config.port, self.figures, self.metrics)
        show = self.options.show_bar if self.options.show_bar is not None else sys.stderr.isatty()
        bar = _Bar(total, start) if self.first and show else None
        started, ended = time.monotonic(), "Failed"  # unless the steps end normally
        try:
            with stop.installed(), _appender(self.options.metrics_file if self.first else None) as out:
                self._steps(start, stop, bar, out)
            if self.ckpts is not None:
                self.ckpts.wait()
                self._committed()
                if not self.result.interrupted:
                    self._export(Path(self.ckpts.directory) / "model")
            ended = "Interrupted" if self.result.interrupted else "Finished"
        finally:
            if self.ckpts is not None:
                self.ckpts.close()
            if bar is not None:
                bar.close()
            self._tell(state=ended, **({"eta_seconds": 0} if ended == "Finished" else {}))
            if self.server is not None:
                self.server.close()
            if self.first:
                write_message(self.options.message_file, self.figures.as_json())
        how = "interrupted" if self.result.interrupted else "done"
        log.info(
            "training %s at step %d of %d after %.1f s",
            how,
            self.result.steps,
            total,
            time.monotonic() - started,
        )
        return self.result

    def _steps(self, start: int, stop: Stop, bar: _Bar | None, out: IO[str] | None) -> None:
        total, every = self.config.training.steps, self.options.log_every
        rate, compile_started = progress.Rate(), time.monotonic()
        cached = compilation.USE.snapshot()
        for index in range(start, total):
            begun = time.monotonic()
            batch = setup.device_batch(self.dataset.batch(index), self.batches)
            self.state, figures = self.step_fn(self.state, self.frozen, batch)
            done = index + 1
            if index == start:  # the first step compiles: leave it out of the rates
                jax.block_until_ready(figures)
                log.info(
                    "step %d compiled and ran in %.1f s; %s",
                    done,
                    time.monotonic() - compile_started,
                    compilation.USE.summary(since=cached),
                )
                rate = progress.Rate()
            else:
                rate.add(self.tokens_per_step)
            self.metrics.tokens.inc(self.tokens_per_step)
            stopping = stop.agreed() and done < total
            if done % every == 0 or done in (start + 1, total) or stopping:
                got = {k: float(v) for k, v in jax.device_get(figures).items()}
                self.metrics.step_seconds.observe(time.monotonic() - begun)
                self._report(done, got, rate.take() if done > start + 1 else None, bar, out)
            if self.ckpts is not None and (self.ckpts.due(done) or done == total):
                self._checkpoint(done)
            if self.ckpts is not None:
                self._committed()
            self.result.steps = done
            if stopping:
                asked = "SIGTERM" if stop.requested.is_set() else "SIGTERM to another process"
                log.warning("stop requested (%s): saving step %d before exit", asked, done)
                self._checkpoint(done)
                self.result.interrupted = True
                return

    def _checkpoint(self, done: int) -> None:
        assert self.ckpts is not None
        waited = time.monotonic()
        h = self.config.training
        position = {
            "step": done,
            "epoch": self.dataset.epoch_of(done),
            "rows": self.packed.rows,
            "batch_size": h.global_batch_size,
            "seed": h.seed,
        }
        self.ckpts.save(done, self.state, {"step": done, "loss": self.last_loss, "data": position})
        self.metrics.checkpoint_seconds.observe(time.monotonic() - waited)

    def _committed(self) -> None:
        """Report a checkpoint whose save has committed since the last look (none while it writes)."""
        assert self.ckpts is not None
        step = self.ckpts.committed()
        if step is None:
            return
        uri = self.ckpts.uri(step)
        self.metrics.checkpoint_step.set(step)
        self.result.checkpoint = uri
        log.info("checkpoint: step %d committed to %s", step, uri)
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._tell(last_checkpoint={"step": step, "uri": uri, "time": when})

    def _tell(self, **changes: Any) -> None:
        """Update the figures behind /progress and the final message (through the server's lock)."""
        if self.server is not None:
            self.server.update(**changes)
            return
        for key, value in changes.items():
            setattr(self.figures, key, value)

    def _report(
        self, done: int, got: dict[str, float], tps: float | None, bar: _Bar | None, out: IO[str] | None
    ) -> None:
        total = self.config.training.steps
        self.last_loss = self.result.losses[done] = got["loss"]
        mfu = tps * self.flops_per_token / self.peak if tps else None  # the first rate pays for a CPU peak
        eta = (total - done) * self.tokens_per_step / tps if tps else None
        m = self.metrics
        m.step.set(done)
        m.loss.set(got["loss"])
        m.lr.set(got["learning_rate"])
        if tps is not None and mfu is not None:
            m.rate.set(tps)
            m.mfu.set(mfu)
        self._tell(
            step=done,
            loss=got["loss"],
            learning_rate=got["learning_rate"],
            tokens_per_second=tps,
            mfu=mfu,
            eta_seconds=eta,
        )
        if out is not None:
            record = {
                "step": done,
                "loss": got["loss"],
                "learning_rate": got["learning_rate"],
                "grad_norm": got["grad_norm"],
                "tokens_per_second": tps,
                "mfu": mfu,
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
        rates = f", {tps:.1f} tokens/s, MFU {mfu:.1%}" if tps and mfu is not None else ""
        log.info(
            "step %d/%d: loss %.4f, lr %.2e, grad norm %.3f%s",
            done,
            total,
            got["loss"],
            got["learning_rate"],
            got["grad_norm"],
            rates,
        )
        if bar is not None:
            bar.update(done, f"loss {got['loss']:.3f}")

    def _export(self, directory: Path) -> None:
        """The trained model in the runtime's own format (what a GemmaServer loads); LoRA adapters are
        merged into the weights first."""
        trainable = self.state["trainable"]
        params = trainable if self.lora is None else lora.merged(self.frozen, trainable, self.lora)
        target = store.save(nnx.merge(self.graphdef, params), directory)
        log.info("exported the trained model to %s", target)


class _Bar:
    """A progress bar for people running `gemma-runtime train` in a terminal."""

    def __init__(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=start, info="compiling")

    def update(self, done: int, info: str) -> None:
        self._bar.update(self._task, completed=done, info=info)

    def close(self) -> None:
        self._bar.stop()


@contextlib.contextmanager
def _appender(path: Path | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        yield handle


def run(config: TrainConfig, options: Options | None = None, stop: Stop | None = None) -> Result:
    """Train to ``config.training.steps``."""
    compilation.enable(config.compilation_cache)
    return Training(config, options).run(stop)
