"""The memory model: its arithmetic against the presets' parameter counts, the mesh it chooses, and the
plans the issue names (Gemma 2 9B on v5e 2x4 and 1x1, Gemma 2 27B on v5e 2x2 and 2x4, Gemma 7B on 2x2),
and the bytes of a training's state per host (tests/runtime/train/test_step.py checks them against the
trainer)."""

from __future__ import annotations

import functools
import math

import pytest

from gemma_runtime import axes
from gemma_runtime.memory import (
    GiB,
    Mesh,
    PlanError,
    candidate_meshes,
    host_chips,
    kv_bytes_per_slot,
    plan_serving,
    training_state_bytes,
    training_state_bytes_per_host,
    weight_bytes_per_chip,
)
from gemma_runtime.variants import PRESETS, preset


@pytest.mark.parametrize("variant", sorted(PRESETS))
def test_unsharded_weights_are_the_parameter_count(variant: str) -> None:
    config = preset(variant)
    assert weight_bytes_per_chip(config, "float32", "none", 1) == 4 * config.param_count()
    assert weight_bytes_per_chip(config, "bfloat16", "none", 1) == 2 * config.param_count()
    int8 = weight_bytes_per_chip(config, "bfloat16", "int8", 1)
    # A byte each plus an f32 scale per output channel for the projections, the feed-forward, the
    # embedding and Gemma 4's experts and per-layer inputs; only norms and scalars stay in bf16.
    weights = list(axes.serving_weights(config))
    kept = sum(math.prod(w.shape) for w in weights if w.contracted is None)
    quantized = config.param_count() - kept
    scales = sum(
        math.prod(n for i, n in enumerate(w.shape) if i not in w.contracted) for w in weights if w.contracted
    )
    assert int8 == quantized + 4 * scales + 2 * kept
    assert kept < 0.002 * config.param_count() or config.param_count() < 10**7  # released: norms only
    assert scales * 4 < 0.07 * quantized  # the scales' overhead: the contracted axes are 64 or more


def test_tensor_parallel_splits_what_it_divides_and_replicates_one_kv_head() -> None:
    gemma_2b = preset("gemma-2b")  # 8 query heads, 1 KV head
    whole = weight_bytes_per_chip(gemma_2b, "bfloat16", "none", 1)
    eighth = weight_bytes_per_chip(gemma_2b, "bfloat16", "none", 8)
    kv_projections = 2 * gemma_2b.num_layers * gemma_2b.embed_dim * gemma_2b.head_dim * 2
    norms = (2 * gemma_2b.num_layers + 1) * gemma_2b.embed_dim * 2
    assert eighth == (whole - kv_projections - norms) // 8 + kv_projections + norms
    # The single KV head is on every chip: the cache per slot does not shrink with tensor.
    assert kv_bytes_per_slot(gemma_2b, 4096, "bfloat16", 8) == kv_bytes_per_slot(
        gemma_2b, 4096, "bfloat16", 1
    )
    gemma2_9b = preset("gemma2-9b")  # 8 KV heads: an eighth each
    per_slot = kv_bytes_per_slot(gemma2_9b, 4096, "bfloat16", 1)
    positions = 4 * gemma2_9b.num_layers * 4096
    assert kv_bytes_per_slot(gemma2_9b, 4096, "bfloat16", 8) == (per_slot - positions) // 8 + positions


def test_local_layers_hold_a_window_sized_ring() -> None:
    gemma3 = preset("gemma3-4b")  # window 1024, five local layers to one global
    short, long = (kv_bytes_per_slot(gemma3, n, "bfloat16", 1) for n in (1024, 8192))
    globals_ = sum(t == "global" for t in gemma3.attention_types)
    per_entry = 2 * gemma3.num_kv_heads * gemma3.head_dim * 2 + 4
    assert long - short == globals_ * (8192 - 1024) * per_entry


def test_gemma2_9b_on_v5e_2x4_fits_with_an_eighth_of_the_weights_per_chip() -> None:
    config = preset("gemma2-9b")
    plan = plan_serving(
        config, dtype="bfloat16", chips=host_chips("v5e", "2x4"), max_len=4096, max_prefill=1024, slots=32
    )
    assert plan.fits
    assert plan.mesh == Mesh(1, 8)
    total = 2 * config.param_count()
    assert total / 8 < plan.weight_bytes < 1.02 * total / 8


def test_gemma2_9b_on_one_v5e_chip_fails_with_the_numbers_and_what_would_fit() -> None:
    with pytest.raises(PlanError) as err:
        plan_serving(
            preset("gemma2-9b"),
            dtype="bfloat16",
            chips=host_chips("v5e", "1x1"),
            max_len=4096,
            max_prefill=1024,
            slots=32,
        )
    message = str(err.value)
    assert "weights 17.21 GiB" in message
    assert "15.43 GiB usable of 15.75 GiB" in message  # the compiler's limit less the model's 2 % margin
    assert "the weights alone need at least 2 chips" in message
    # int8 halves the weights (8.6 GiB), which leaves room for a few 4096-token slots on the chip.
    int8 = plan_serving(
        preset("gemma2-9b"),
        dtype="bfloat16",
        quantization="int8",
        chips=host_chips("v5e", "1x1"),
        max_len=4096,
        max_prefill=1024,
    )
    assert f"with int8 weights {int8.slots} slots would fit" in message
    assert 1 <= int8.slots < 32


def test_gemma2_27b_on_v5e_2x2_says_what_fits_and_an_unset_batch_gets_it() -> None:
    chips = host_chips("v5e", "2x2")
    config = preset("gemma2-27b")
    # XLA's TPU compiler agrees (gemma-runtime plan): 2 slots fit, 3 need 15.76 of 15.75 GiB per chip.
    with pytest.raises(PlanError, match="at most 2 slots fit at 8192 tokens on mesh 1x4") as err:
        plan_serving(config, dtype="bfloat16", chips=chips, max_len=8192, max_prefill=1024, slots=32)
    assert "32 slots fit with a maximum sequence length of about" in str(err.value)
    auto = plan_serving(config, dtype="bfloat16", chips=chips, max_len=8192, max_prefill=1024)
    assert (auto.slots, auto.mesh, auto.fits) == (2, Mesh(1, 4), True)
    wider = plan_serving(
        config, dtype="bfloat16", chips=host_chips("v5e", "2x4"), max_len=8192, max_prefill=1024
    )
    assert wider.fits
    assert wider.slots > 2
    assert wider.total_bytes <= 15.75 * GiB


def test_gemma_7b_does_not_serve_32_long_sequences_on_v5e_2x2() -> None:
    with pytest.raises(PlanError, match="does not fit"):
        plan_serving(
            preset("gemma-7b"),
            dtype="bfloat16",
            chips=host_chips("v5e", "2x2"),
            max_len=4096,
            max_prefill=1024,
            slots=32,
        )


def test_small_models_are_replicated_over_slots() -> None:
    plan = plan_serving(
        preset("gemma3-1b"),
        dtype="bfloat16",
        chips=host_chips("v5e", "2x4"),
        max_len=4096,
        max_prefill=1024,
        slots=32,
    )
    assert plan.mesh.data > 1
    assert plan.slots % plan.mesh.data == 0


@pytest.mark.parametrize(
    ("mesh", "slots", "message"),
    [
        (Mesh(1, 8), 32, "does not divide gemma3-1b's 4 query heads; valid meshes"),
        (Mesh(4, 1), 32, "data x tensor = 4, but the host has 8 chips"),
        (Mesh(8, 1), 12, "max_batch_size 12 is not a multiple of the mesh's data degree 8"),
    ],
)
def test_a_mesh_that_cannot_work_is_a_clear_error(mesh: Mesh, slots: int, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_serving(
            preset("gemma3-1b"),
            dtype="bfloat16",
            chips=host_chips("v5e", "2x4"),
            max_len=4096,
            max_prefill=1024,
            slots=slots,
            mesh=mesh,
        )


def test_a_mixture_of_experts_may_split_its_experts_over_an_expert_axis() -> None:
    config = preset("gemma4-26b-a4b")  # 128 experts, 16 query heads; global layers 2 KV heads, local 8
    meshes = [str(m) for m in candidate_meshes(config, 8)]
    assert {"1x8", "2x4", "2x2x2", "1x8x1", "1x2x4"} <= set(meshes)
    assert all(m.count("x") == 1 for m in (str(m) for m in candidate_meshes(preset("gemma2-9b"), 8)))
    # The experts (most of the weights) split over expert x tensor, everything else over tensor alone.
    bf16 = functools.partial(weight_bytes_per_chip, config, "bfloat16", "none")
    assert bf16(8) < bf16(2, 4) < bf16(1, 8) < bf16(1)
    # On a v6e 2x4 host at 8192 tokens it holds the most slots: tensor 2 splits every layer's KV heads
    # (tensor 4 cannot split the global layers' 2), and expert 2 halves the experts again.
    plan = plan_serving(
        config, dtype="bfloat16", chips=host_chips("v6e", "2x4"), max_len=8192, max_prefill=1024
    )
    assert (str(plan.mesh), plan.mesh.axes, plan.fits) == ("2x2x2", "data x expert x tensor", True)
    assert "(mesh data x expert x tensor = 2x2x2)" in plan.summary()
    with pytest.raises(PlanError, match="expert 2 does not divide gemma2-9b's 0 experts"):
        plan_serving(
            preset("gemma2-9b"),
            dtype="bfloat16",
            chips=host_chips("v6e", "2x4"),
            max_len=8192,
            max_prefill=1024,
            mesh=Mesh(1, 4, 2),
        )


def test_unknown_accelerators_name_what_is_valid() -> None:
    with pytest.raises(ValueError, match="valid: 1x1, 2x2, 2x4"):
        host_chips("v5e", "3x3")
    with pytest.raises(PlanError, match="needs a topology"):
        host_chips("v5e")
    assert host_chips("nvidia-l4", count=2).memory_bytes == 24 * GiB
    assert host_chips("cpu").usable_bytes is None


def test_a_training_state_is_float32_weights_and_two_adamw_moments_split_over_one_replicas_hosts() -> None:
    config = preset("gemma2-9b")
    whole = training_state_bytes(config)
    assert whole == 12 * config.param_count() + 12  # weights, mu and nu in f32; three int32 counters
    assert 110e9 < whole < 111e9
    # Two v5p 2x2x2 slices, one data replica each: the two hosts of one slice write it all.
    assert training_state_bytes_per_host(config, hosts=4, data=2) == -(-whole // 2)
    assert training_state_bytes_per_host(config, hosts=4, data=1) == -(-whole // 4)  # fsdp over all
    assert training_state_bytes_per_host(config, hosts=1, data=8) == whole  # one host, replicated
    lora = training_state_bytes(config, lora_rank=8)
    assert lora < whole / 300  # LoRA saves only the adapters and their moments
