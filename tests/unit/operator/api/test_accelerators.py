"""The accelerator table: every TPU slice row (chips, hosts, machine type), the explicit 2x4 choice,
GPU machine shapes, and errors that list what would be valid."""

from __future__ import annotations

import pytest

from gemma_runtime import accelerators as acc

# (type, topology, chips per host or None for the default) -> (chips, hosts, machine type)
TPU_ROWS = {
    ("v5e", "1x1", None): (1, 1, "ct5lp-hightpu-1t"),
    ("v5e", "2x2", None): (4, 1, "ct5lp-hightpu-4t"),
    ("v5e", "2x4", None): (8, 1, "ct5lp-hightpu-8t"),
    ("v5e", "2x4", 8): (8, 1, "ct5lp-hightpu-8t"),
    ("v5e", "2x4", 4): (8, 2, "ct5lp-hightpu-4t"),
    ("v5e", "4x4", None): (16, 4, "ct5lp-hightpu-4t"),
    ("v5e", "4x8", None): (32, 8, "ct5lp-hightpu-4t"),
    ("v5e", "8x8", None): (64, 16, "ct5lp-hightpu-4t"),
    ("v5e", "8x16", None): (128, 32, "ct5lp-hightpu-4t"),
    ("v5e", "16x16", None): (256, 64, "ct5lp-hightpu-4t"),
    ("v6e", "1x1", None): (1, 1, "ct6e-standard-1t"),
    ("v6e", "2x2", None): (4, 1, "ct6e-standard-4t"),
    ("v6e", "2x4", None): (8, 1, "ct6e-standard-8t"),
    ("v6e", "2x4", 4): (8, 2, "ct6e-standard-4t"),
    ("v6e", "4x4", None): (16, 4, "ct6e-standard-4t"),
    ("v6e", "4x8", None): (32, 8, "ct6e-standard-4t"),
    ("v6e", "8x8", None): (64, 16, "ct6e-standard-4t"),
    ("v6e", "8x16", None): (128, 32, "ct6e-standard-4t"),
    ("v6e", "16x16", None): (256, 64, "ct6e-standard-4t"),
    ("v5p", "2x2x1", None): (4, 1, "ct5p-hightpu-4t"),
    ("v5p", "2x2x2", None): (8, 2, "ct5p-hightpu-4t"),
    ("v5p", "2x2x4", None): (16, 4, "ct5p-hightpu-4t"),
    ("v5p", "2x4x4", None): (32, 8, "ct5p-hightpu-4t"),
    ("v5p", "4x4x4", None): (64, 16, "ct5p-hightpu-4t"),
    ("v5p", "4x4x8", None): (128, 32, "ct5p-hightpu-4t"),
    ("v5p", "4x8x8", None): (256, 64, "ct5p-hightpu-4t"),
    ("v5p", "8x8x8", None): (512, 128, "ct5p-hightpu-4t"),
}


@pytest.mark.parametrize(("key", "expected"), TPU_ROWS.items(), ids=lambda v: "-".join(map(str, v)))
def test_every_tpu_row(key: tuple[str, str, int | None], expected: tuple[int, int, str]) -> None:
    tpu_slice = acc.tpu_slice(*key)
    assert (tpu_slice.chips, tpu_slice.hosts, tpu_slice.machine_type) == expected
    assert acc.hosts_for(*key) == expected[1]


def test_the_table_has_no_row_the_tests_do_not_name() -> None:
    rows = {(g.name, s.topology, s.chips_per_host) for g in acc.TPUS.values() for s in g.slices}
    named = {(t, topo, cph or acc.tpu_slice(t, topo).chips_per_host) for t, topo, cph in TPU_ROWS}
    assert rows == named


def test_gke_labels_and_peak_figures() -> None:
    assert {g.name: g.node_label for g in acc.TPUS.values()} == {
        "v5e": "tpu-v5-lite-podslice",
        "v5p": "tpu-v5p-slice",
        "v6e": "tpu-v6e-slice",
    }
    assert {g.name: g.peak_bf16_tflops for g in acc.TPUS.values()} == {
        "v5e": 197.0,
        "v5p": 459.0,
        "v6e": 918.0,
    }


def test_2x4_is_one_8_chip_host_unless_asked_otherwise() -> None:
    assert acc.tpu_slice("v5e", "2x4").machine_type == "ct5lp-hightpu-8t"
    assert acc.tpu_slice("v5e", "2x4", 4).hosts == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: acc.tpu_slice("v4", "2x2x1"), "unknown TPU type 'v4'; valid: v5e, v5p, v6e"),
        (
            lambda: acc.tpu_slice("v5e", "3x3"),
            "topology '3x3' is not valid for TPU v5e; valid: 1x1, 2x2, 2x4",
        ),
        (lambda: acc.tpu_slice("v5p", "2x4"), "valid: 2x2x1, 2x2x2"),
        (lambda: acc.tpu_slice("v5e", "4x4", 8), "chipsPerHost 8 is not valid for TPU v5e 4x4; valid: [4]"),
        (
            lambda: acc.gpu_machine("nvidia-h100-80gb", 2),
            "count 2 is not valid for nvidia-h100-80gb; valid: [8]",
        ),
        (lambda: acc.gpu_machine("nvidia-k80", 1), "unknown GPU type 'nvidia-k80'"),
    ],
)
def test_errors_say_what_would_be_valid(call, message: str) -> None:
    with pytest.raises(acc.UnknownAcceleratorError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


@pytest.mark.parametrize(
    ("gpu", "count", "machine"),
    [
        ("nvidia-l4", 1, "g2-standard-12"),
        ("nvidia-l4", 8, "g2-standard-96"),
        ("nvidia-tesla-a100", 4, "a2-highgpu-4g"),
        ("nvidia-h100-80gb", 8, "a3-highgpu-8g"),
        ("nvidia-h100-mega-80gb", 8, "a3-megagpu-8g"),
        ("nvidia-h200-141gb", 8, "a3-ultragpu-8g"),
        ("nvidia-b200", 8, "a4-highgpu-8g"),
    ],
)
def test_gpu_machines(gpu: str, count: int, machine: str) -> None:
    assert acc.gpu_machine(gpu, count) == machine
