"""The quality cost of int8 weights, measured on the same model: logit error and greedy (top-1)
agreement against full precision, teacher-forced over given token sequences."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gemma_runtime.model import Transformer, TransformerConfig
from gemma_runtime.model.attention import init_layer_cache
from gemma_runtime.serve.forward import StepTokens, forward
from gemma_runtime.serve.weights import Weights, extract, weight_bytes

Array = jax.Array
_forward = jax.jit(forward, static_argnums=(0,), static_argnames=("dtype",))


def sequence_logits(
    config: TransformerConfig, weights: Weights, tokens: np.ndarray, dtype: jnp.dtype
) -> Array:
    """Logits [T, V] of every position of ``tokens`` [T], through the engine's forward (one chunk)."""
    length = int(tokens.shape[0])
    cache = [init_layer_cache(config, t, 1, length, dtype) for t in config.attention_types]
    step = StepTokens(
        jnp.zeros((1,), jnp.int32),
        jnp.full((1,), -1, jnp.int32),  # the one decode row idles
        jnp.asarray(tokens, jnp.int32),
        jnp.arange(length, dtype=jnp.int32),
        jnp.zeros((length,), jnp.int32),  # one segment
        jnp.zeros((1,), jnp.int32),  # in slot 0
    )
    rows = jnp.arange(length, dtype=jnp.int32)
    logits, _ = _forward(config, weights, cache, step, chunk_rows=rows, dtype=dtype)
    return jnp.asarray(logits[1:])


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    relative_logit_error: float  # RMS of (int8 - full) logits over the RMS of the full logits
    max_abs_logit_error: float
    top1_agreement: float  # fraction of positions where both choose the same greedy token
    weight_bytes_ratio: float  # int8 weight bytes / full-precision weight bytes

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in dataclasses.asdict(self).items()}


def measure_int8(model: Transformer, sequences: list[np.ndarray]) -> QuantizationReport:
    """Compare the model's full-precision weights with their int8 version over ``sequences``."""
    full, int8 = extract(model, "none"), extract(model, "int8")
    errors, references, agree, total, peak = 0.0, 0.0, 0, 0, 0.0
    for tokens in sequences:
        a = np.asarray(sequence_logits(model.config, full, tokens, model.dtype))
        b = np.asarray(sequence_logits(model.config, int8, tokens, model.dtype))
        errors += float(np.sum((a - b) ** 2))
        references += float(np.sum(a**2))
        peak = max(peak, float(np.max(np.abs(a - b))))
        agree += int(np.sum(a.argmax(-1) == b.argmax(-1)))
        total += a.shape[0]
    return QuantizationReport(
        relative_logit_error=float(np.sqrt(errors / references)),
        max_abs_logit_error=peak,
        top1_agreement=agree / total,
        weight_bytes_ratio=weight_bytes(int8) / weight_bytes(full),
    )
