"""``gemma-runtime serve``: build the service from a :class:`ServeConfig` and its memory plan (checked
before this: ``serve/plan.py``) and run it under uvicorn. The weights load straight into their shards on
the plan's data x tensor mesh of this host's devices.

uvicorn owns the signals while it runs: on SIGTERM it stops accepting connections, lets in-flight
requests finish for up to ``GRACEFUL_SHUTDOWN_S``, cancels what is left, then the app's lifespan stops
the engine thread.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import uvicorn
from jax.sharding import Mesh

from gemma_runtime import compilation
from gemma_runtime.config import ServeConfig
from gemma_runtime.memory import ServingPlan
from gemma_runtime.serve.engine import ModelEngine
from gemma_runtime.serve.layout import serving_mesh
from gemma_runtime.serve.load import load_weights as load_sharded
from gemma_runtime.serve.load import random_weights
from gemma_runtime.serve.plan import model_shape
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.server import create_app
from gemma_runtime.serve.service import Service
from gemma_runtime.serve.weights import Weights
from gemma_runtime.tokenizer import Tokenizer, resolve_tokenizer
from gemma_runtime.variants import GEMMA4_EMPTY_THOUGHT, TransformerConfig, preset

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 30


def load_weights(config: ServeConfig, plan: ServingPlan, mesh: Mesh) -> tuple[TransformerConfig, Weights]:
    """The checkpoint's weights, or random weights of the variant, straight into their shards."""
    dtype = jnp.dtype(plan.dtype)
    source = config.model
    if source.checkpoint is None:
        log.warning("no checkpoint: serving random weights of %s", source.variant)
        shape = preset(source.variant)
        return shape, random_weights(shape, dtype=dtype, quantization=config.quantization, mesh=mesh)
    return load_sharded(
        Path(source.checkpoint),
        variant=source.variant,
        format=source.format,
        dtype=dtype,
        quantization=config.quantization,
        mesh=mesh,
    )


def load_tokenizer(config: ServeConfig) -> Tokenizer:
    """The configured tokenizer, else tokenizer.model or tokenizer.json beside the checkpoint, else the
    packaged tiny one for the tiny presets."""
    source = config.model
    found = resolve_tokenizer(source.tokenizer, source.checkpoint, source.variant)
    if found is not None:
        return found
    raise FileNotFoundError(
        "no tokenizer: set model.tokenizer (--tokenizer) or put tokenizer.model or tokenizer.json beside "
        "the checkpoint"
    )


def build_engine(config: ServeConfig, plan: ServingPlan) -> ModelEngine:
    """The engine of ``plan`` (its mesh over this host's devices, its slots and lengths)."""
    cached = compilation.USE.snapshot()
    mesh = serving_mesh(plan.mesh.data, plan.mesh.tensor, jax.local_devices(), plan.mesh.expert)
    shape, weights = load_weights(config, plan, mesh)
    engine = ModelEngine(
        shape,
        weights,
        dtype=jnp.dtype(plan.dtype),
        mesh=mesh,
        slots=plan.slots,
        max_len=plan.max_len,
        max_prefill=plan.max_prefill,
    )
    seconds = engine.warm_up()
    log.info(
        "compiled %d step shapes in %.1f s; %s",
        len(engine.buckets) + 1,
        seconds,
        compilation.USE.summary(since=cached),
    )
    return engine


def checked_tokenizer(config: ServeConfig) -> Tokenizer:
    """The tokenizer (:func:`load_tokenizer`), refused with a ValueError when it has more tokens than the
    model's embedding has rows: their ids would be clamped into other tokens, silently."""
    tokenizer = load_tokenizer(config)
    shape = model_shape(config)
    if tokenizer.vocab_size > shape.vocab_size:
        raise ValueError(
            f"model.tokenizer: {tokenizer.path} has {tokenizer.vocab_size} tokens but {shape.name} has "
            f"{shape.vocab_size}: use the tokenizer of the checkpoint's model"
        )
    return tokenizer


def build_service(config: ServeConfig, plan: ServingPlan, tokenizer: Tokenizer) -> Service:
    sampling = config.sampling
    return Service(
        model_name=config.served_model_name,
        tokenizer=tokenizer,
        load=lambda: build_engine(config, plan),
        max_queued=config.max_queued_requests,
        defaults=SamplingParams(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p),
        default_max_tokens=sampling.max_tokens,
        empty_thought=config.model.variant in GEMMA4_EMPTY_THOUGHT,
    )


def serve(config: ServeConfig, plan: ServingPlan, tokenizer: Tokenizer) -> None:
    """Run until SIGTERM or SIGINT; ``plan`` is ``plan.plan_for_host(config)`` and ``tokenizer``
    :func:`checked_tokenizer`'s, both checked before this."""
    compilation.enable(config.compilation_cache)
    app = create_app(build_service(config, plan, tokenizer))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            log_level=logging.getLevelName(logging.getLogger().level).lower(),
            access_log=False,
        )
    )
    # uvicorn re-raises the signal it caught once it has shut down gracefully; with these handlers in
    # place that second delivery does nothing, so a graceful stop exits 0 instead of dying by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: log.info("stopped"))
    try:
        server.run()
    except SystemExit as stop:  # uvicorn could not start, e.g. the port is taken
        # The engine thread may be inside a compile; finalizing the interpreter under it aborts the
        # process (SIGABRT) instead of exiting with uvicorn's code.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.code if isinstance(stop.code, int) else 1)
