"""The sharded half of test_gemma4_serving.py's sharded test, run in a subprocess with 8 simulated CPU
devices (``python -m tests.runtime.serve.gemma4_sharded_case``; prints one JSON document): for each tiny
Gemma 4 kind, the greedy tokens of one seeded workload through the scheduler on a data 2 x tensor 2
engine, next to those of the single-device engine on the same weights, and the bytes each device of
that mesh holds of the weights (f32, and int8 on the same mesh) and of the KV cache; for the mixture of
experts the same on 8 devices, data 2 x expert 2 x tensor 2 (f32 and int8), with the experts' layout."""

from __future__ import annotations

import json

import jax

from gemma_runtime.model import tiny_config
from gemma_runtime.serve.engine import ModelEngine
from gemma_runtime.serve.layout import serving_mesh
from gemma_runtime.serve.weights import bytes_per_device
from tests.runtime.serve.helpers import varied_model
from tests.runtime.serve.sharded_cases import MAX_LEN, MAX_PREFILL, MAX_SEGMENTS, SLOTS, serve, workload


def main() -> None:
    out = {}
    limits = {"slots": SLOTS, "max_len": MAX_LEN, "max_prefill": MAX_PREFILL, "max_segments": MAX_SEGMENTS}
    for kind in ("dense", "e", "moe"):
        model = varied_model(tiny_config(4, kind), seed=7)
        reference = serve(ModelEngine.from_model(model, **limits), workload(7))
        mesh = serving_mesh(2, 2, jax.devices()[:4])
        engine = ModelEngine.from_model(model, mesh=mesh, **limits)
        tokens = serve(engine, workload(7))
        int8 = ModelEngine.from_model(model, mesh=mesh, quantization="int8", **limits)
        out[kind] = {
            "tokens": tokens,
            "reference": reference,
            "weight_bytes": bytes_per_device(engine.weights),
            "int8_weight_bytes": bytes_per_device(int8.weights),
            "cache_bytes": bytes_per_device(engine.cache),
        }
        if kind == "moe":  # expert parallelism: data 2 x expert 2 x tensor 2
            mesh = serving_mesh(2, 2, jax.devices()[:8], expert=2)
            engine = ModelEngine.from_model(model, mesh=mesh, **limits)
            int8 = ModelEngine.from_model(model, mesh=mesh, quantization="int8", **limits)
            int8_reference = serve(ModelEngine.from_model(model, quantization="int8", **limits), workload(7))
            gate = engine.weights.layers[0]["experts_gate"]
            out["moe-expert"] = {
                "tokens": serve(engine, workload(7)),
                "reference": reference,
                "int8_tokens": serve(int8, workload(7)),
                "int8_reference": int8_reference,
                "weight_bytes": bytes_per_device(engine.weights),
                "int8_weight_bytes": bytes_per_device(int8.weights),
                "cache_bytes": bytes_per_device(engine.cache),
                "experts_spec": str(gate.sharding.spec),
                "experts_shard": list(gate.addressable_shards[0].data.shape),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
