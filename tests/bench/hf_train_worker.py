"""Runs INSIDE the Hugging Face reference venv: time AdamW training steps of a transformers Gemma model
on the batches it is given (the same token rows our runtime trained on). Imports nothing of ours.

usage: python hf_train_worker.py request.json output.npz
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import transformers


def peak_flops(size: int = 2048, repeats: int = 3) -> float:
    a = torch.ones(size, size)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    torch.manual_seed(0)
    config = transformers.GemmaConfig(**request["config"], attn_implementation="sdpa")
    model = transformers.GemmaForCausalLM(config).to(torch.float32).train()
    h = request["training"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=h["learning_rate"], betas=(0.9, 0.95), eps=1e-8, weight_decay=h["weight_decay"]
    )
    batches = np.asarray(request["batches"], dtype=np.int64)  # [steps, B, L]
    times, losses = [], []
    for tokens in batches:
        started = time.perf_counter()
        ids = torch.from_numpy(tokens)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), h["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        losses.append(float(loss))
        print(f"hf step {len(times)}: {times[-1]:.1f} s, loss {losses[-1]:.3f}", file=sys.stderr, flush=True)
    np.savez(
        sys.argv[2],
        step_seconds=np.asarray(times),
        losses=np.asarray(losses),
        torch_peak_flops=np.asarray(peak_flops()),
        versions=np.array([torch.__version__, transformers.__version__]),
        threads=np.asarray(torch.get_num_threads()),
    )


if __name__ == "__main__":
    main()
