"""``gemma-runtime serve``: build the service from a :class:`ServeConfig` and run it under uvicorn.

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
from flax import nnx

from gemma_runtime.checkpoint import load_model
from gemma_runtime.config import ServeConfig
from gemma_runtime.model import Transformer, preset
from gemma_runtime.serve.engine import ModelEngine
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.server import create_app
from gemma_runtime.serve.service import Service
from gemma_runtime.tokenizer import Tokenizer

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 30


def _dtype(config: ServeConfig) -> jnp.dtype:
    full = config.dtype == "float32" or (config.dtype == "auto" and jax.default_backend() == "cpu")
    dtype: jnp.dtype = jnp.dtype(jnp.float32 if full else jnp.bfloat16)
    return dtype


def load_weights(config: ServeConfig) -> Transformer:
    """The checkpoint's model, or random weights of the variant when there is no checkpoint."""
    dtype = _dtype(config)
    source = config.model
    if source.checkpoint is None:
        log.warning("no checkpoint: serving random weights of %s", source.variant)
        return Transformer(preset(source.variant), rngs=nnx.Rngs(0), param_dtype=dtype, dtype=dtype)
    return load_model(
        Path(source.checkpoint), variant=source.variant, format=source.format, param_dtype=dtype, dtype=dtype
    )


def load_tokenizer(config: ServeConfig) -> Tokenizer:
    """The configured tokenizer, else tokenizer.model beside the checkpoint, else the packaged tiny one
    for the tiny presets."""
    source = config.model
    if source.tokenizer:
        return Tokenizer(source.tokenizer)
    if source.checkpoint and (Path(source.checkpoint) / "tokenizer.model").exists():
        return Tokenizer(Path(source.checkpoint) / "tokenizer.model")
    if source.variant.startswith("tiny"):
        return Tokenizer.tiny()
    raise FileNotFoundError(
        "no tokenizer: set model.tokenizer (--tokenizer) or put tokenizer.model beside the checkpoint"
    )


def build_engine(config: ServeConfig) -> ModelEngine:
    model = load_weights(config)
    max_len = min(config.max_sequence_length, model.config.max_seq_len)
    engine = ModelEngine(
        model,
        slots=config.max_batch_size,
        max_len=max_len,
        max_prefill=min(config.max_prefill_length, max_len),
        quantization=config.quantization,
    )
    seconds = engine.warm_up()
    log.info("compiled %d step shapes in %.1f s", len(engine.buckets) + 1, seconds)
    return engine


def build_service(config: ServeConfig) -> Service:
    tokenizer = load_tokenizer(config)
    sampling = config.sampling
    return Service(
        model_name=config.served_model_name,
        tokenizer=tokenizer,
        load=lambda: build_engine(config),
        max_queued=config.max_queued_requests,
        defaults=SamplingParams(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p),
        default_max_tokens=sampling.max_tokens,
    )


def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    app = create_app(build_service(config))
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
