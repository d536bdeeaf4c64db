"""The training step compiled for a TPU slice attends with splash attention and runs its layers as a scan:
the plan's program holds the splash kernels (Pallas custom calls) and far fewer temporaries than with
XLA's attention, and its FLOPs, which XLA counts once for a scanned body and not at all for a kernel,
are those of the unrolled step with XLA's attention."""

from __future__ import annotations

from typing import Any

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import preset
from gemma_runtime.plan import training
from gemma_runtime.plan.topology import slice_devices


def _config(sequence: int, rows: int, **training_changes: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "name": "kernels",
            "model": {"variant": "tiny"},
            "data": {"path": "unused"},
            "training": {
                "steps": 1,
                "sequence_length": sequence,
                "global_batch_size": rows,
                "precision": "bf16",
                "remat": "full",
                **training_changes,
            },
        }
    )


def test_splash_attention_shrinks_the_temporaries_of_a_training_step() -> None:
    devices = slice_devices("v5e", "2x2")
    splash = _config(2048, 8)  # 2 rows per device
    assert "tpu_custom_call" in training.lower(splash, devices).as_text()
    with_kernel = training.compile_step(splash, devices, count_flops=False)
    xla = training.compile_step(_config(2048, 8, attention="xla"), devices, count_flops=False)
    assert with_kernel.fits
    assert xla.fits
    # Measured with libtpu 0.0.42.1: 0.172 GiB with XLA's attention ([2, 4, 2048, 2048] f32 scores per
    # layer), 0.036 GiB with splash attention (4.8x).
    assert xla.temp_bytes > 3 * with_kernel.temp_bytes, (xla.temp_bytes, with_kernel.temp_bytes)


def test_a_scanned_step_with_splash_attention_counts_the_flops_of_every_layer() -> None:
    devices = slice_devices("v5e", "2x2")
    shape = preset("tiny").replace(num_layers=12)  # two periods of Gemma 3's six: a scan of two steps
    config = _config(256, 8)
    counted = training.compile_step(config, devices, shape)
    assert counted.flops_source == training.FLOPS_UNROLLED
    unrolled = training.compile_step(
        _config(256, 8, attention="xla", scan_layers=False), devices, shape, count_flops=False
    )
    assert training.counted_whole(_config(256, 8, attention="xla", scan_layers=False), shape)
    assert abs(counted.flops - unrolled.flops) < 0.01 * unrolled.flops, (counted.flops, unrolled.flops)
    # What XLA counts of the scanned step itself: one body of six layers, no attention.
    raw = training.compile_step(config, devices, shape, count_flops=False)
    assert raw.flops < 0.8 * unrolled.flops, (raw.flops, unrolled.flops)
