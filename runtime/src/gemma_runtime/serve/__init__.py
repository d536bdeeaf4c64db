"""Serving: the engine (its KV cache and one batched step, whose layers are the model's own block from
``model/block.py``), the scheduler, sampling, and the OpenAI-compatible HTTP server."""
