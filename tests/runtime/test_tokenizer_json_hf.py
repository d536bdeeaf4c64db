"""Gemma's tokenizer from a Hugging Face tokenizer.json (what Gemma 4's repositories ship instead of a
tokenizer.model): transformers turns two SentencePiece models into tokenizer.json files as it does for
Gemma (in the reference venv, tests/runtime/reference/hf_tokenizer_worker.py), and our tokenizer, reading
those files with the ``tokenizers`` library, must give transformers' ids and texts, and the ids of the
same SentencePiece model read directly: for the packaged tiny tokenizer (Gemma 1-3's turn markers) and a
Gemma 4 vocabulary (``<|turn>``, ``<turn|>``, ``<|think|>``, the thought channel), on plain text, spaces
and tabs, accents, CJK and emoji (byte fallback), digits, and chat prompts with every marker."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemma_runtime.tokenizer import GEMMA4_PIECES, Tokenizer, train_tokenizer
from tests.runtime.reference.hf import REQUIREMENTS, SMOKE_TEST
from tests.runtime.reference.venvs import (
    HERE,
    ReferenceUnavailableError,
    ensure_venv,
    require_reference,
    run_worker,
)

TEXTS = [
    "The children hung their coats on hooks in the hallway.",
    "  two  spaces,\ttabs\nand new lines\n\n",
    "ünïcödé, naïve café; 漢字 and 🙂 fall back to bytes",
    "Numbers 3.14159 and 2026-12-06 split into digits.",
    "",
]
# Per vocabulary: (its tokenizer.model, the folder with transformers' tokenizer.json, what transformers
# encoded ("ids") and decoded ("decoded")).
Converted = dict[str, tuple[Path, Path, dict[str, list[Any]]]]
CHATS = [
    [{"role": "user", "content": "Why is the sky blue?"}],
    [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is rain?"},
        {"role": "assistant", "content": "Water falling from clouds."},
        {"role": "user", "content": "And snow?"},
    ],
]


def _gemma4_model(folder: Path) -> Path:
    sample = Path(str(resources.files("gemma_runtime") / "data" / "sample.txt"))
    return train_tokenizer(sample, folder / "gemma4", 1024, symbols=GEMMA4_PIECES)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Both vocabularies converted by transformers (see ``Converted``)."""
    work = tmp_path_factory.mktemp("tokenizer-json")
    models = {
        "tiny": Path(str(resources.files("gemma_runtime") / "data" / "tiny_tokenizer.model")),
        "gemma4": _gemma4_model(work),
    }
    cases = [
        {"name": name, "model": str(model), "output": str(work / name), "texts": TEXTS}
        for name, model in models.items()
    ]
    try:
        python = ensure_venv("hf", REQUIREMENTS, SMOKE_TEST)
    except ReferenceUnavailableError as err:
        require_reference(f"Hugging Face reference unavailable: {err}")
    out = run_worker(python, HERE / "hf_tokenizer_worker.py", {"cases": cases}, work / "worker")
    return {
        name: (
            model,
            work / name,
            {kind: json.loads(str(np.asarray(out[f"{name}.{kind}"]))) for kind in ("ids", "decoded")},
        )
        for name, model in models.items()
    }


@pytest.mark.parametrize("vocabulary", ["tiny", "gemma4"])
def test_tokenizer_json_gives_transformers_ids_and_the_sentencepiece_models(
    converted: Converted, vocabulary: str
) -> None:
    model, folder, theirs = converted[vocabulary]
    assert (folder / "tokenizer.json").is_file()
    ours, sentencepiece = Tokenizer(folder), Tokenizer(model)  # a folder: its tokenizer.json
    assert ours.path == folder / "tokenizer.json"
    assert ours.vocab_size == sentencepiece.vocab_size
    assert ours.gemma4 == (vocabulary == "gemma4")
    for name in ("pad_id", "eos_id", "bos_id", "unk_id", "start_of_turn_id", "end_of_turn_id"):
        assert getattr(ours, name) == getattr(sentencepiece, name), name
    for text, ids, decoded in zip(TEXTS, theirs["ids"], theirs["decoded"], strict=True):
        assert ours.encode(text, add_bos=False) == ids == sentencepiece.encode(text, add_bos=False), text
        assert ours.decode(ids) == decoded == sentencepiece.decode(ids), text


def test_chat_prompts_are_the_same_ids_from_either_file(
    converted: Converted,
) -> None:
    for vocabulary, (model, folder, _) in converted.items():
        ours, sentencepiece = Tokenizer(folder / "tokenizer.json"), Tokenizer(model)
        options = [{"thinking": True}, {"empty_thought": True}, {}] if ours.gemma4 else [{}]
        for chat in CHATS:
            for option in options:
                ids = ours.encode_chat(chat, **option)
                assert ids == sentencepiece.encode_chat(chat, **option), (vocabulary, option)
                assert ids[0] == ours.bos_id
                assert ids.count(ours.bos_id) == 1
                spelled = ours.decode(ids, skip_special=False)
                assert spelled == sentencepiece.decode(ids, skip_special=False), (vocabulary, option)
