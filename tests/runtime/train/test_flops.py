"""MFU accounting: 6N per token plus attention (windowed on local layers), and the per-chip peaks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gemma_runtime.model import preset
from gemma_runtime.train import flops


def test_training_flops_per_token_are_six_n_plus_attention() -> None:
    c = preset("bench-small")
    n = c.param_count(include_embedding=False) + c.vocab_size * c.embed_dim  # the output projection is used
    attention = 12 * c.num_heads * c.head_dim * 256 * c.num_layers
    assert flops.train_flops_per_token(c, 256) == 6 * n + attention


def test_local_layers_only_attend_over_their_window() -> None:
    c = preset("gemma2-2b")  # alternating local (window 4096) and global layers
    short, long = flops.train_flops_per_token(c, 4096), flops.train_flops_per_token(c, 8192)
    per_context = 12 * c.num_heads * c.head_dim
    assert long - short == per_context * 4096 * (c.num_layers // 2)  # only the global half grows


@pytest.mark.parametrize(
    ("kind", "peak"),
    [("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12), ("NVIDIA H200", 989e12)],
)
def test_accelerator_peaks_per_chip(kind: str, peak: float) -> None:
    devices: Any = [SimpleNamespace(device_kind=kind)] * 4
    assert flops.peak_flops(devices) == 4 * peak
