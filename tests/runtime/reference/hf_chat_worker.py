"""Runs INSIDE the Hugging Face reference venv (transformers): render chats with a chat template through
transformers' own ``apply_chat_template(..., tokenize=False, add_generation_prompt=True)`` and save the
strings. The tokenizer is a four-piece word-level one written here: the template only needs its bos token.
It imports nothing from our repository: the two sides meet only through files.

request: {"cases": [{"name", "template" (a file path), "messages", "options" (template variables)}]}
usage: python hf_chat_worker.py request.json output.npz
"""

from __future__ import annotations

import json
import sys

import numpy as np
from transformers import PreTrainedTokenizerFast


def main() -> None:
    with open(sys.argv[1]) as file:
        request = json.load(file)
    pieces = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    vocab = {piece: i for i, piece in enumerate(pieces.values())}
    # tokenizers' JSON format: a word-level model of the four pieces, no other stage.
    stages = ("truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder")
    backend: dict[str, object] = dict.fromkeys(stages)
    backend.update(
        version="1.0", added_tokens=[], model={"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    )
    with open("tokenizer.json", "w") as file:  # in the worker's own folder
        json.dump(backend, file)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file="tokenizer.json", **pieces)
    rendered = {}
    for case in request["cases"]:
        with open(case["template"], encoding="utf-8") as file:
            template = file.read()
        text = tokenizer.apply_chat_template(
            case["messages"],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=True,
            **case["options"],
        )
        rendered[case["name"]] = np.array(text)
    np.savez(sys.argv[2], **rendered)


if __name__ == "__main__":
    main()
