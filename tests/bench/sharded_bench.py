"""Sharded serving benchmark: the same mixed workload through the engine on 1 device and on 8 simulated
CPU devices (meshes data x tensor 1x8, 2x4, 8x1 and the memory model's choice), with the bytes of weights
and KV cache each device holds. Reported, never asserted.

On this machine the 8 "devices" are XLA:CPU host devices sharing two cores, so the sharded rows show
the partitioning's overhead, not a speed-up; the per-device bytes are what a real host's chips hold.

usage: python -m tests.bench.sharded_bench [--output bench/sharded.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench import results
from tests.bench.serve_bench import Plan, offline, workload

VARIANT = "tiny"  # with 8 query heads and 4 KV heads, so every split of 8 devices is a valid mesh
PLAN = Plan(32, (16, 256), (16, 64), 16, 64, 0, 0, 0, ())
MESHES: list[tuple[int, int] | None] = [(1, 8), (2, 4), (8, 1), None]  # None: the memory model's choice


def one(mesh: tuple[int, int] | None, devices: int) -> dict[str, Any]:
    """Runs in a process whose XLA sees ``devices`` CPU devices."""
    import jax
    import jax.numpy as jnp

    from gemma_runtime.memory import Chips, Mesh, kv_bytes_per_slot, plan_serving, weight_bytes_per_chip
    from gemma_runtime.serve.engine import ModelEngine
    from gemma_runtime.serve.layout import serving_mesh
    from gemma_runtime.serve.load import random_weights
    from gemma_runtime.serve.weights import bytes_per_device
    from gemma_runtime.variants import preset

    config = preset(VARIANT).replace(name="tiny-8-heads", num_heads=8, num_kv_heads=4)
    chips = Chips("cpu", devices, None)
    chosen = plan_serving(
        config,
        dtype="float32",
        chips=chips,
        max_len=1024,
        max_prefill=PLAN.max_prefill,
        slots=PLAN.batch,
        mesh=None if mesh is None else Mesh(*mesh),
    )
    layout = serving_mesh(chosen.mesh.data, chosen.mesh.tensor, jax.devices()[:devices])
    weights = random_weights(config, dtype=jnp.float32, quantization="none", mesh=layout)
    engine = ModelEngine(
        config,
        weights,
        dtype=jnp.float32,
        mesh=layout,
        slots=PLAN.batch,
        max_len=1024,
        max_prefill=PLAN.max_prefill,
    )
    compile_seconds = engine.warm_up()
    items = workload(PLAN, config.vocab_size)
    offline(engine, items[:4])  # first steps of each shape outside the timing
    figures = offline(engine, items)
    return {
        "devices": devices,
        "mesh": str(chosen.mesh),
        "chosen": mesh is None,
        "compile_seconds": round(compile_seconds, 2),
        "useful_tokens_per_second": round(figures["useful_tokens_per_second"], 1),
        "weight_bytes_per_device": bytes_per_device(engine.weights),
        "kv_cache_bytes_per_device": bytes_per_device(engine.cache),
        "model_weight_bytes_per_device": weight_bytes_per_chip(config, "float32", "none", chosen.mesh.tensor),
        "model_kv_cache_bytes_per_device": PLAN.batch
        // chosen.mesh.data
        * kv_bytes_per_slot(config, 1024, "float32", chosen.mesh.tensor),
    }


def run(log: Any = print) -> dict[str, Any]:
    rows = []
    for devices, mesh in [(1, (1, 1)), *[(8, m) for m in MESHES]]:
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        }
        log(f"[bench] sharded serving: {devices} device(s), mesh {mesh or 'chosen'}")
        out = subprocess.run(
            [sys.executable, "-m", "tests.bench.sharded_bench", "--one", json.dumps([mesh, devices])],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        log(f"[bench]   {rows[-1]}")
    base = rows[0]["useful_tokens_per_second"]
    for row in rows:
        row["throughput_vs_one_device"] = round(row["useful_tokens_per_second"] / base, 3)
    return {"variant": VARIANT, "plan": dataclasses.asdict(PLAN), "rows": rows, "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=Path("bench/sharded.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mesh, devices = json.loads(args.one)
        print(json.dumps(one(tuple(mesh) if mesh else None, devices)))
        return
    results.write(run(), args.output)


if __name__ == "__main__":
    main()
