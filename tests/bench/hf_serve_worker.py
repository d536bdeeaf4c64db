"""Runs INSIDE the Hugging Face reference venv (torch + transformers): build a random Gemma model from a
config, save it with save_pretrained (so our engine loads the very same weights), then time transformers'
``generate`` on (a) a mixed workload in static batches in arrival order and (b) batch-1 decoding.
It imports nothing from our repository: the two sides meet only through files.

usage: python hf_serve_worker.py request.json output.npz
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
import transformers


def _generate(model: torch.nn.Module, prompts: list[list[int]], new_tokens: int) -> None:
    """Greedy, left-padded, exactly ``new_tokens`` for every row (no end-of-sequence)."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(request["seed"])
    config = transformers.GemmaConfig(**request["config"], attn_implementation="sdpa")
    model = transformers.GemmaForCausalLM(config).to(torch.float32).eval()
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # norm scales start at zero; give them values as trained weights have
                param.normal_(0.0, 0.1)
        model.save_pretrained(request["save_dir"], safe_serialization=True)

        decode = request["decode"]
        prompt = [list(np.random.RandomState(1).randint(3, config.vocab_size, decode["prompt_length"]))]
        _generate(model, prompt, 2)  # warm up
        started = time.perf_counter()
        _generate(model, prompt, 1)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        _generate(model, prompt, decode["new_tokens"])
        total = time.perf_counter() - started
        out["decode_tokens_per_second"] = np.asarray((decode["new_tokens"] - 1) / (total - prefill))

        workload = request["workload"]
        batch = request["batch_size"]
        started = time.perf_counter()
        generated = 0
        for start in range(0, len(workload), batch):
            group = workload[start : start + batch]
            longest = max(item["max_tokens"] for item in group)
            _generate(model, [item["prompt"] for item in group], longest)
            generated += longest * len(group)
        out["mixed_seconds"] = np.asarray(time.perf_counter() - started)
        out["mixed_generated_tokens"] = np.asarray(generated)
    out["versions"] = np.array([torch.__version__, transformers.__version__])
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
