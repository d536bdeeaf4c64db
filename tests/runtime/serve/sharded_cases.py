"""The 8-device half of test_sharded.py, run in a subprocess with 8 simulated CPU devices
(``python -m tests.runtime.serve.sharded_cases CASES``; prints one JSON document).

For each case (a tiny model of one generation, f32 or int8, a data x tensor mesh) it serves one seeded
workload, requests arriving at random steps, through the real scheduler on a sharded engine, and
reports the greedy tokens next to those of the single-device engine on the same weights, the bytes each
device holds of the weights and of the KV cache, how often the step and the slot reset were compiled,
and the collectives in the compiled step. It also reports the errors of meshes that cannot work."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any

import jax
import numpy as np
from flax import nnx

from gemma_runtime.model import Transformer, tiny_config
from gemma_runtime.serve.engine import ModelEngine
from gemma_runtime.serve.forward import StepTokens
from gemma_runtime.serve.layout import serving_mesh
from gemma_runtime.serve.sampling import SamplingParams
from gemma_runtime.serve.scheduler import Request, Scheduler
from gemma_runtime.variants import AttentionType, TransformerConfig
from tests.runtime.serve.helpers import Collect, varied_model

SLOTS, MAX_LEN, MAX_PREFILL, MAX_SEGMENTS = 8, 48, 16, 2
Workload = list[tuple[int, list[int], int]]  # (arrival step, prompt, max_tokens)
_COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def config_of(generation: int, kv_heads: int) -> TransformerConfig:
    """Eight query heads (tensor 8 is legal); two layers, one local and one global where the generation
    has local layers (Gemma 3's own pattern would make both local)."""
    config = tiny_config(generation, num_heads=8, num_kv_heads=kv_heads, num_layers=2)
    if generation == 3:
        config = dataclasses.replace(config, attention_pattern=(AttentionType.LOCAL, AttentionType.GLOBAL))
    return config


def workload(seed: int) -> Workload:
    """Ten requests: three at once (their prompts share steps), the rest at random steps; prompts past
    the sliding window (8) and past a chunk (16)."""
    rng = np.random.RandomState(seed)
    requests = []
    for n in range(10):
        prompt = rng.randint(4, 256, size=rng.randint(1, 30)).tolist()
        arrival = 0 if n < 3 else int(rng.randint(0, 20))
        requests.append((arrival, prompt, int(rng.randint(1, 9))))
    return sorted(requests, key=lambda r: r[0])


def serve(engine: ModelEngine, requests: Workload) -> list[list[int]]:
    """Every request's greedy tokens, in the workload's order."""
    scheduler = Scheduler(engine, max_queued=100)
    sinks = [Collect() for _ in requests]
    for step in range(500):
        for (arrival, prompt, max_tokens), sink in zip(requests, sinks, strict=True):
            if arrival == step:
                scheduler.submit(Request(prompt, max_tokens, sink, SamplingParams(temperature=0)))
        scheduler.step()
        if all(s.reason for s in sinks):
            break
    assert all(s.reason == "length" for s in sinks), [s.reason for s in sinks]
    return [s.tokens for s in sinks]


def device_bytes(tree: Any, mesh: jax.sharding.Mesh) -> list[int]:
    """Bytes of ``tree``'s arrays on each device of ``mesh``, in mesh order."""
    held = dict.fromkeys(mesh.devices.flat, 0)
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return [held[d] for d in mesh.devices.flat]


def collectives(engine: ModelEngine) -> list[tuple[str, int]]:
    """(kind, elements of the result) of every collective in the step compiled for a full chunk (the
    executable already compiled: lowering again hits the cache)."""
    d, local, p = engine.shards, engine.local, engine.max_segments
    zeros = np.zeros((d, local), np.int32)
    chunk = np.zeros((d, MAX_PREFILL), np.int32)
    tokens = StepTokens(zeros, zeros, chunk, chunk, chunk, np.zeros((d, p), np.int32))
    sampling = (zeros.astype(np.float32), zeros, zeros.astype(np.float32), zeros.astype(np.uint32), zeros)
    lowered = engine._step.lower(engine.weights, engine.cache, tokens, np.zeros((d, p), np.int32), sampling)
    found = []
    for line in lowered.compile().as_text().splitlines():
        match = _COLLECTIVE.search(line)
        if match:
            shapes = _SHAPE.findall(match.group(1))
            elements = sum(int(np.prod([int(n) for n in dims.split(",") if n])) for _, dims in shapes)
            found.append((match.group(2), elements))
    return found


def compiled(engine: ModelEngine) -> dict[str, int]:
    return {
        "step": int(engine._step._cache_size()),
        "reset": int(engine._reset._cache_size()),  # type: ignore[attr-defined]
    }


def errors() -> dict[str, str]:
    """The messages of a batch the data axis does not divide and of heads the tensor axis does not."""
    model = Transformer(tiny_config(2), rngs=nnx.Rngs(0))  # 4 query heads
    found = {}
    for name, (data, tensor, slots) in {"slots": (8, 1, 4), "heads": (1, 8, 8)}.items():
        try:
            mesh = serving_mesh(data, tensor, jax.devices())
            ModelEngine.from_model(model, mesh=mesh, slots=slots, max_len=MAX_LEN, max_prefill=MAX_PREFILL)
        except ValueError as error:
            found[name] = str(error)
    return found


def main(cases: list[dict[str, Any]]) -> dict[str, Any]:
    assert jax.device_count() == 8
    limits = {"slots": SLOTS, "max_len": MAX_LEN, "max_prefill": MAX_PREFILL, "max_segments": MAX_SEGMENTS}
    models: dict[tuple[int, int], Transformer] = {}
    references: dict[tuple[int, int, str], list[list[int]]] = {}
    results = []
    for case in cases:
        generation, kv_heads, quantization = case["generation"], case["kv_heads"], case["quantization"]
        key = (generation, kv_heads)
        if key not in models:
            models[key] = varied_model(config_of(generation, kv_heads), seed=generation)
        model, requests = models[key], workload(generation)
        if (*key, quantization) not in references:
            single = ModelEngine.from_model(model, quantization=quantization, **limits)
            references[(*key, quantization)] = serve(single, requests)
        mesh = serving_mesh(case["data"], case["tensor"], jax.devices())
        engine = ModelEngine.from_model(model, mesh=mesh, quantization=quantization, **limits)
        engine.warm_up()
        warm = compiled(engine)
        tokens = serve(engine, requests)
        results.append(
            {
                **case,
                "tokens": tokens,
                "reference": references[(*key, quantization)],
                "weight_bytes": device_bytes(engine.weights, mesh),
                "cache_bytes": device_bytes(engine.cache, mesh),
                "compiled_after_warm_up": warm,
                "compiled_after_serving": compiled(engine),
                "buckets": len(engine.buckets),
                "collectives": collectives(engine),
            }
        )
    return {"cases": results, "errors": errors()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
