"""Model-FLOPs utilisation: the FLOPs a training step needs over what the devices could do.

FLOPs per token follow PaLM's accounting: 6 x the weights used in matrix products, plus attention
(queries x keys and probabilities x values, forward and backward: 12 x heads x head_dim x context per
layer), where a sliding-window layer's context is its window. Rematerialisation is not counted: MFU
measures useful work. Peaks: the published dense bf16 figure per chip; on CPU a measured large f32
matrix product (there is no datasheet figure worth quoting).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from gemma_runtime.model import AttentionType, TransformerConfig

# Dense bf16 FLOP/s per chip, matched on the start of jax's device_kind (longest first).
PEAKS = {
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5p": 459e12,
    "TPU v5": 459e12,  # v5p reports "TPU v5"
    "TPU v4": 275e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
}


def train_flops_per_token(config: TransformerConfig, sequence_length: int) -> float:
    attention = 0
    for kind in config.attention_types:
        window = config.sliding_window if kind == AttentionType.LOCAL and config.sliding_window else None
        context = min(window, sequence_length) if window else sequence_length
        attention += 12 * config.num_heads * config.head_dim * context
    return 3.0 * config.matmul_flops_per_token() + attention


@functools.cache
def measured_cpu_peak(size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the best of a few f32 ``size``-cubed matrix products on this machine."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def peak_flops(devices: list[jax.Device]) -> float:
    """The whole job's peak: per-chip figure x chips; CPU devices (often simulated) share one measured
    machine peak per process."""
    kind = devices[0].device_kind
    for prefix in sorted(PEAKS, key=len, reverse=True):
        if kind.startswith(prefix):
            return PEAKS[prefix] * len(devices)
    return measured_cpu_peak() * int(jax.process_count())
