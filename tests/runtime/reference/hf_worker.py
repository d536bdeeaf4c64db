"""Runs INSIDE the Hugging Face reference venv (torch + transformers): build a random Gemma model from a
config, write it with save_pretrained (safetensors + config.json), and save its logits and greedy
generation. It imports nothing from our repository: the two sides meet only through files.

usage: python hf_worker.py request.json output.npz
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import transformers

CLASSES = {
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    "gemma4_text": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM),
    "gemma4_unified_text": (transformers.Gemma4UnifiedTextConfig, transformers.Gemma4UnifiedForCausalLM),
}


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    config_cls, model_cls = CLASSES[request["model_type"]]
    torch.manual_seed(request.get("seed", 0))
    config = config_cls(**request["config"], attn_implementation="eager")
    model = model_cls(config).to(torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if request.get("perturb_norms", True) and "norm" in name:
                # Norm scales start at zero, which would hide a mapping mistake.
                param.add_(torch.randn_like(param) * 0.1)
            elif request.get("weight_std"):
                param.normal_(0.0, request["weight_std"])
        for name, buffer in model.named_buffers():
            if name.endswith("layer_scalar"):  # Gemma 4's per-layer scalar: ones would hide a mapping mistake
                buffer.copy_(1.0 + torch.rand_like(buffer))
    model.save_pretrained(request["save_dir"], safe_serialization=True)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        tokens = torch.tensor(request["tokens"], dtype=torch.long)
        out["logits"] = model(input_ids=tokens).logits.float().numpy()
        if request.get("generate"):
            prompt = torch.tensor(request["generate"]["prompt"], dtype=torch.long)
            generated = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=request["generate"]["max_new_tokens"],
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
            out["generated"] = generated[:, prompt.shape[1] :].numpy()
    out["versions"] = np.array([torch.__version__, transformers.__version__])
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
