"""Which tokenizer file a folder gives (tokenizer.model first, else tokenizer.json), and clear errors for a
folder with neither and for a file that is not what its name says. transformers' own tokenizer.json files
are read in tests/runtime/test_tokenizer_json_hf.py."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HfTokenizer
from tokenizers.models import WordLevel

from gemma_runtime.tokenizer import Tokenizer, find_tokenizer

TINY = Path(str(resources.files("gemma_runtime") / "data" / "tiny_tokenizer.model"))
GEMMA4_WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "hello", "world"]


def _word_level_json(path: Path) -> Path:
    """A Gemma 4-shaped vocabulary in a word-level tokenizer.json (the library's own writer)."""
    model = WordLevel({word: i for i, word in enumerate(GEMMA4_WORDS)}, unk_token="<unk>")
    tokenizer = HfTokenizer(model)
    tokenizer.add_special_tokens(GEMMA4_WORDS[:4])
    tokenizer.add_tokens(GEMMA4_WORDS[4:6])
    tokenizer.save(str(path))
    return path


def test_a_folder_gives_its_tokenizer_model_before_its_tokenizer_json(tmp_path: Path) -> None:
    assert find_tokenizer(tmp_path) is None
    _word_level_json(tmp_path / "tokenizer.json")
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.json"
    assert Tokenizer(tmp_path).gemma4
    shutil.copy(TINY, tmp_path / "tokenizer.model")
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.model"
    assert not Tokenizer(tmp_path).gemma4


def test_a_tokenizer_json_reads_its_pieces_and_special_tokens(tmp_path: Path) -> None:
    tok = Tokenizer(_word_level_json(tmp_path / "tokenizer.json"))
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (4, 5)
    assert tok.encode("<|turn>", add_bos=False) == [4]
    assert tok.decode([2, 4, 6, 5, 1]) == "hello"  # bos, eos and the turn markers dropped
    assert tok.decode([2, 4], skip_special=False) == "<bos><|turn>"


def test_an_empty_folder_and_wrong_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no tokenizer.model or tokenizer.json in "):
        Tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer.json is not a Hugging Face tokenizer.json"):
        Tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.model").write_text("not a model")
    with pytest.raises(ValueError, match=r"tokenizer.model is not a SentencePiece model"):
        Tokenizer(tmp_path / "tokenizer.model")
    words = HfTokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    words.save(str(tmp_path / "other.json"))
    with pytest.raises(ValueError, match=r"other.json: the tokenizer has no '<pad>' piece"):
        Tokenizer(tmp_path / "other.json")
