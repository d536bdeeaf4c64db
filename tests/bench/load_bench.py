"""Memory of a serving load on 8 simulated CPU devices: a random `bench-small` checkpoint (Hugging Face
safetensors, f32, 1 GB) loaded by ``serve.load.load_weights`` over a tensor=8 mesh as float32, bfloat16
and int8 (bf16 norms), each in a fresh process; beside each, the load before issue 17 (the whole model
onto device 0 with ``load_model``, ``extract``, then ``device_put`` into the same shardings).

Figures: per-device peak bytes (the addressable shards of ``jax.live_arrays()``, sampled after each
tensor is placed, less what was live before) against the final weights per device; host working peak
(tracemalloc, numpy's allocations: the most the load allocated while converting one tensor, over what
it held before that tensor; on CPU a placed shard may alias host memory, so each tensor's own shards are
included); the whole load's tracemalloc peak; and seconds.

usage: python -m tests.bench.load_bench [--output bench/load.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

MODES = {"float32": ("float32", "none"), "bfloat16": ("bfloat16", "none"), "int8": ("bfloat16", "int8")}
SOURCE_ITEMSIZE = 4  # the checkpoints written here are f32


def device_bytes() -> dict[int, int]:
    """Bytes held per device id by every live array's addressable shards, each buffer counted once
    (reading a shard's data leaves a live single-device array behind on the same buffer)."""
    import jax

    per: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    for array in jax.live_arrays():
        for shard in array.addressable_shards:
            buffer = (shard.device.id, shard.data.unsafe_buffer_pointer())
            if buffer not in seen:
                seen.add(buffer)
                per[shard.device.id] = per.get(shard.device.id, 0) + shard.data.nbytes
    return per


def _shard_bytes(weight: Any) -> dict[int, int]:
    """Bytes per device id of one serving weight (both parts of an int8 one)."""
    import jax

    per: dict[int, int] = {}
    for leaf in jax.tree.leaves(weight):
        shard = math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for device in leaf.sharding.addressable_devices:
            per[device.id] = per.get(device.id, 0) + shard
    return per


def _weight_figures(weights: Any) -> dict[str, Any]:
    """Final bytes per device, the largest single weight's shard per device, and the logical total."""
    from gemma_runtime.serve.weights import weight_bytes

    units = [weights.embedding, weights.final_norm, *(w for layer in weights.layers for w in layer.values())]
    final: dict[int, int] = {}
    largest: dict[int, int] = {}
    for unit in units:
        for device, size in _shard_bytes(unit).items():
            final[device] = final.get(device, 0) + size
            largest[device] = max(largest.get(device, 0), size)
    return {"final": final, "largest_shard": largest, "model_bytes": weight_bytes(weights)}


def _source_figures(config: Any) -> dict[str, int]:
    from gemma_runtime.checkpoint.params import abstract_model, variables

    sizes = [math.prod(v.shape) * SOURCE_ITEMSIZE for v in variables(abstract_model(config)).values()]
    return {"checkpoint_bytes": sum(sizes), "largest_tensor_bytes": max(sizes)}


def measure(path: Path, *, dtype: str, quantization: str, mesh: Any) -> dict[str, Any]:
    """Load ``path`` with ``load_weights`` and report its memory (see the module's docstring)."""
    import jax

    from gemma_runtime.serve.load import load_weights

    gc.collect()
    before = device_bytes()
    peaks: dict[int, int] = {}
    host = {"working": 0, "total": 0, "start": 0}
    tracemalloc.start()
    origin = host["start"] = tracemalloc.get_traced_memory()[0]

    def sample(_: str) -> None:
        peak = tracemalloc.get_traced_memory()[1]
        host["working"] = max(host["working"], peak - host["start"])
        host["total"] = max(host["total"], peak - origin)
        for device, size in device_bytes().items():
            peaks[device] = max(peaks.get(device, 0), size - before.get(device, 0))
        tracemalloc.reset_peak()
        host["start"] = tracemalloc.get_traced_memory()[0]

    started = time.monotonic()
    config, weights = load_weights(path, dtype=dtype, quantization=quantization, mesh=mesh, on_tensor=sample)
    jax.block_until_ready(weights)
    seconds = time.monotonic() - started
    tracemalloc.stop()
    figures = _weight_figures(weights)
    source = _source_figures(config)
    devices = sorted(figures["final"])
    return {
        "dtype": dtype,
        "quantization": quantization,
        "mesh": dict(mesh.shape),
        "seconds": round(seconds, 2),
        "gb_per_s": round(source["checkpoint_bytes"] / 1e9 / seconds, 3),
        **source,
        "model_bytes": figures["model_bytes"],
        "device_final_bytes": max(figures["final"].values()),
        "device_peak_bytes": max(peaks.values()),
        "host_working_peak_bytes": host["working"],
        "host_total_peak_bytes": host["total"],
        "per_device": [
            {
                "device": d,
                "final": figures["final"][d],
                "peak": peaks.get(d, 0),
                "largest_shard": figures["largest_shard"][d],
            }
            for d in devices
        ],
    }


def measure_before(path: Path, *, dtype: str, quantization: str, mesh: Any) -> dict[str, Any]:
    """The load before issue 17: ``load_model`` (every tensor onto device 0), ``extract``, then
    ``device_put`` into the serving shardings; device bytes sampled after each of those steps."""
    import jax

    from gemma_runtime.checkpoint import load_model
    from gemma_runtime.serve.layout import weight_shardings
    from gemma_runtime.serve.weights import extract

    gc.collect()
    before = device_bytes()
    peak: dict[int, int] = {}

    def sample() -> None:
        for device, size in device_bytes().items():
            peak[device] = max(peak.get(device, 0), size - before.get(device, 0))

    tracemalloc.start()
    origin = tracemalloc.get_traced_memory()[0]
    started = time.monotonic()
    model = load_model(path, param_dtype=dtype, dtype=dtype)
    sample()
    extracted = extract(model, quantization)
    sample()
    weights = jax.device_put(extracted, weight_shardings(model.config, mesh, quantization))
    jax.block_until_ready(weights)
    sample()
    seconds = time.monotonic() - started
    host_total = tracemalloc.get_traced_memory()[1] - origin
    tracemalloc.stop()
    return {
        "seconds": round(seconds, 2),
        "device_peak_bytes": max(peak.values()),
        "device_final_bytes": max(_weight_figures(weights)["final"].values()),
        "host_total_peak_bytes": host_total,
    }


def _worker(path: Path, mode: str) -> None:
    import jax

    from gemma_runtime.serve.layout import serving_mesh

    dtype, quantization = MODES[mode]
    mesh = serving_mesh(1, len(jax.devices()), jax.devices())
    result = measure(path, dtype=dtype, quantization=quantization, mesh=mesh)
    result.pop("per_device")
    gc.collect()
    result["before_issue_17"] = measure_before(path, dtype=dtype, quantization=quantization, mesh=mesh)
    print(json.dumps({"mode": mode, **result}))


def run(variant: str = "bench-small") -> dict[str, Any]:
    from gemma_runtime.variants import preset
    from tests.fakes.checkpoints import write_hf

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        path = write_hf(Path(tmp) / variant, preset(variant))
        print(f"[load] wrote {variant} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        for mode in MODES:
            done = subprocess.run(
                [sys.executable, "-m", "tests.bench.load_bench", "--worker", mode, "--checkpoint", str(path)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"[load] {mode}: {rows[-1]['seconds']} s", file=sys.stderr)
    return {"model": variant, "format": "safetensors (f32)", "devices": 8, "loads": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.load_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--variant", default="bench-small")
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.checkpoint, args.worker)
        return
    result = run(args.variant)
    print(json.dumps(result, indent=2))
    if args.output:
        from tests.bench import results

        results.write(result, args.output)


if __name__ == "__main__":
    main()
