"""Runs INSIDE the Hugging Face reference venv (transformers): turn SentencePiece models into
tokenizer.json files the way transformers does for Gemma (``AutoTokenizer`` on a folder holding the
tokenizer.model, then ``save_pretrained``), and encode and decode texts with the result. It imports nothing
from our repository: the two sides meet only through files.

request: {"cases": [{"name", "model" (a tokenizer.model path), "output" (a folder), "texts"}]}
output: per case, "<name>/tokenizer.json" written in its folder, and "<name>.ids" (a JSON list of each
text's ids, no special tokens added) and "<name>.decoded" (a JSON list of their decoded texts).
usage: python hf_tokenizer_worker.py request.json output.npz
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

# Gemma's special pieces; no mask token (GemmaTokenizer would add "<mask>", which Gemma's own vocabularies
# hold but these small ones do not).
SPECIAL = {
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": None,
}


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    out = {}
    for case in request["cases"]:
        source = Path(case["output"]) / "source"
        source.mkdir(parents=True)
        shutil.copy(case["model"], source / "tokenizer.model")
        config = {"tokenizer_class": "GemmaTokenizer", **SPECIAL}
        (source / "tokenizer_config.json").write_text(json.dumps(config))
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.save_pretrained(case["output"])
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in case["texts"]]
        decoded = [tokenizer.decode(i) for i in ids]
        out[f"{case['name']}.ids"] = np.array(json.dumps(ids))
        out[f"{case['name']}.decoded"] = np.array(json.dumps(decoded))
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
