"""The serving engine sharded over the host's devices (issue 17), on 8 simulated CPU devices in one
subprocess (``sharded_cases.py``): tiny Gemma 1 (one KV head), 2 (four) and 3 (two) with eight query
heads, each on every data x tensor mesh of 8, f32 and int8 alternating so that every generation and
every mesh runs both, KV heads replicated where tensor does not divide them.

With requests arriving at random steps through the real scheduler, every request gets the greedy tokens
of the single-device engine; every device holds its share of the weights and of the KV cache (the
memory model's figures, within 5 %); the step compiles once per shape (decode, and each chunk bucket) and
never again while serving; the compiled step never gathers a cache or a weight (its largest all-gather
is one shard's logits), and with data parallelism alone it exchanges nothing but the sampler's "is any
row sampled" flag, so no data replica computes another's rows. A batch the data axis does not divide
and heads the tensor axis does not divide are refused with messages that name them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gemma_runtime import memory
from tests.runtime.serve.sharded_cases import MAX_LEN, MAX_SEGMENTS, SLOTS, config_of
from tests.runtime.simulated import run_json

MESHES = [(1, 8), (2, 4), (4, 2), (8, 1)]
KV_HEADS = {1: 1, 2: 4, 3: 2}
# int8 on alternate meshes, shifted by generation: each generation and each mesh runs both dtypes.
CASES = [
    {
        "generation": generation,
        "kv_heads": KV_HEADS[generation],
        "quantization": "int8" if (generation + index) % 2 == 0 else "none",
        "data": data,
        "tensor": tensor,
    }
    for generation in (1, 2, 3)
    for index, (data, tensor) in enumerate(MESHES)
]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    # Unoptimised CPU code: compiling the 18 engines' steps takes half as long, and the tokens are
    # compared between engines compiled alike.
    found: dict[str, Any] = run_json(
        ["-m", "tests.runtime.serve.sharded_cases", json.dumps(CASES)],
        timeout=900,
        xla_flags="--xla_backend_optimization_level=0",
    )
    return found


def _name(case: dict[str, Any]) -> str:
    return f"gemma{case['generation']} {case['quantization']} data={case['data']} tensor={case['tensor']}"


def test_every_mesh_serves_the_single_device_tokens(results: dict[str, Any]) -> None:
    assert len(results["cases"]) == len(CASES)
    for case in results["cases"]:
        assert case["tokens"] == case["reference"], _name(case)


def test_each_device_holds_its_share_of_weights_and_cache(results: dict[str, Any]) -> None:
    for case in results["cases"]:
        config = config_of(case["generation"], case["kv_heads"])
        weights = memory.weight_bytes_per_chip(config, "float32", case["quantization"], case["tensor"])
        slots = SLOTS // case["data"]
        cache = slots * memory.kv_bytes_per_slot(config, MAX_LEN, "float32", case["tensor"])
        for held in case["weight_bytes"]:
            assert held == pytest.approx(weights, rel=0.05), _name(case)
        for held in case["cache_bytes"]:
            assert held == pytest.approx(cache, rel=0.05), _name(case)


def test_the_step_compiles_once_per_bucket(results: dict[str, Any]) -> None:
    for case in results["cases"]:
        expected = {"step": 1 + case["buckets"], "reset": 1}
        assert case["compiled_after_warm_up"] == expected, _name(case)
        assert case["compiled_after_serving"] == expected, _name(case)


def test_no_cache_or_weight_crosses_devices(results: dict[str, Any]) -> None:
    for case in results["cases"]:
        rows = SLOTS // case["data"] + min(MAX_SEGMENTS, SLOTS // case["data"])  # one shard's logits
        vocab = config_of(case["generation"], case["kv_heads"]).vocab_size
        gathered = [n for kind, n in case["collectives"] if kind == "all-gather"]
        assert max(gathered, default=0) <= rows * vocab, _name(case)
        if case["tensor"] == 1:  # data parallel alone: each replica on its own rows
            assert all(kind == "all-reduce" and n == 1 for kind, n in case["collectives"]), case[
                "collectives"
            ]


def test_meshes_that_cannot_work_are_refused(results: dict[str, Any]) -> None:
    slots, heads = results["errors"]["slots"], results["errors"]["heads"]
    assert "max_batch_size 4 is not a multiple of the mesh's data axis (8)" in slots
    assert "data=1 x tensor=8: num_heads 4" in heads
