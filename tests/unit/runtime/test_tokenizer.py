"""The Gemma tokenizer wrapper, its chat template, tokenizer training and the packaged tiny tokenizer.

Covered:
- special ids are read from the model by piece (pad 0, eos 1, bos 2, unk 3 and the turn markers, each a
  single piece), also when a model puts the turn markers at other ids; stop ids are eos and end_of_turn;
- encode/decode round trips ordinary text (digits, punctuation, newlines, non-ASCII through byte
  fallback); ``add_bos`` / ``add_eos``; decode drops special pieces unless asked to keep them;
- the chat template string exactly (user, user/assistant/user, a system message folded into the first
  user turn) and its ids (one bos, turn markers as single ids); role and turn-order errors;
- a missing file, a file that is no SentencePiece model, a model without Gemma's pieces: clear errors;
- the packaged tiny tokenizer loads, has vocabulary 1024, round-trips a sentence of ``sample.txt`` and
  is what ``build-tiny`` regenerates from ``sample.txt``;
- training is deterministic: two trainings of one corpus give byte-identical files.

Each test trains its own small model in a temporary folder rather than relying on the packaged one.
"""

from __future__ import annotations

import io
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest
import sentencepiece as spm

from gemma_runtime import tokenizer as tokenizer_module
from gemma_runtime.tokenizer import Tokenizer, chat_prompt, train_tokenizer

CORPUS = """\
The train left the station at seven in the morning and reached the city before nine.
Rain fell on the garden all night, and in the morning the soil was soft and dark.
A good soup needs onions, carrots, celery, salt, pepper and a little patience.
The cluster scheduler places each program on a machine with enough free memory.
Bread rises because yeast eats sugar in the flour and gives off small bubbles of gas.
On cold days the children walked to school in thick coats, scarves and warm boots.
Clouds form when warm air rises, cools, and some of its water vapor turns into drops.
The baker sold 120 loaves on Friday and 75 cinnamon buns before ten o'clock.
Computers store numbers in binary; eight bits make a byte, and a byte holds 256 values.
She asked: "Why is the sky blue?" and her brother told her about scattered light.
"""
SMALL_VOCAB = 320


def _write_corpus(folder: Path) -> Path:
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    return corpus


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("tokenizer")
    return Tokenizer(train_tokenizer(_write_corpus(folder), folder / "small", SMALL_VOCAB))


def test_training_writes_prefix_dot_model(tmp_path: Path) -> None:
    model = train_tokenizer(_write_corpus(tmp_path), tmp_path / "out" / "tok", SMALL_VOCAB)
    assert model == tmp_path / "out" / "tok.model"
    assert Tokenizer(model).vocab_size == SMALL_VOCAB


def test_special_ids_follow_gemma_conventions(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.stop_ids == (tok.eos_id, tok.end_of_turn_id)
    assert tok.vocab_size == SMALL_VOCAB


def test_turn_markers_are_single_pieces(tok: Tokenizer) -> None:
    assert tok.start_of_turn_id not in (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id)
    assert tok.encode("<start_of_turn>", add_bos=False) == [tok.start_of_turn_id]
    assert tok.encode("<end_of_turn>", add_bos=False) == [tok.end_of_turn_id]
    assert tok.start_of_turn_id != tok.end_of_turn_id


def test_special_ids_are_read_by_piece_not_fixed(tmp_path: Path) -> None:
    # A Gemma-like model with other pieces before the turn markers, as Gemma's own vocabulary has.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=SMALL_VOCAB,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<mask>", "<unused0>", "<end_of_turn>", "<start_of_turn>"],
        byte_fallback=True,
        minloglevel=2,
    )
    path = tmp_path / "shifted.model"
    path.write_bytes(model.getvalue())
    shifted = Tokenizer(path)
    assert (shifted.end_of_turn_id, shifted.start_of_turn_id) == (6, 7)
    assert shifted.stop_ids == (1, 6)


@pytest.mark.parametrize(
    "text",
    [
        "The train left the station at seven in the morning.",
        "Numbers like 2024 and 3.14, punctuation; (brackets) and 'quotes'!",
        "Two lines\nwith a tab\tand  double spaces.",
        "Unseen letters fall back to bytes: café, naïve, 雪, ☃.",
        "",
    ],
)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, add_bos=False)) == text


def test_add_bos_and_eos(tok: Tokenizer) -> None:
    text = "Rain fell on the garden."
    plain = tok.encode(text, add_bos=False)
    assert plain
    assert tok.bos_id not in plain
    assert tok.encode(text) == [tok.bos_id, *plain]
    assert tok.encode(text, add_bos=False, add_eos=True) == [*plain, tok.eos_id]


def test_decode_drops_special_pieces(tok: Tokenizer) -> None:
    text = "A good soup."
    ids = [tok.pad_id, *tok.encode(text), tok.end_of_turn_id, tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special=False) == f"<pad><bos>{text}<end_of_turn><eos><pad>"


def test_decode_rejects_ids_outside_the_vocabulary(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match=f"token id {SMALL_VOCAB} is outside the vocabulary"):
        tok.decode([5, SMALL_VOCAB])


def test_chat_prompt_single_user_turn() -> None:
    prompt = chat_prompt([{"role": "user", "content": "Why is the sky blue?"}])
    assert prompt == "<bos><start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n"


def test_chat_prompt_conversation() -> None:
    messages = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "  Tell me about trains.\n"},
    ]
    assert chat_prompt(messages) == (
        "<bos>"
        "<start_of_turn>user\nHello!<end_of_turn>\n"
        "<start_of_turn>model\nHello. How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nTell me about trains.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_chat_prompt_folds_system_into_first_user_turn() -> None:
    messages = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is rain?"},
        {"role": "assistant", "content": "Water falling from clouds."},
        {"role": "user", "content": "And snow?"},
    ]
    assert chat_prompt(messages) == (
        "<bos>"
        "<start_of_turn>user\nAnswer in one sentence.\n\nWhat is rain?<end_of_turn>\n"
        "<start_of_turn>model\nWater falling from clouds.<end_of_turn>\n"
        "<start_of_turn>user\nAnd snow?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_encode_chat_ids(tok: Tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why does bread rise?"},
    ]
    ids = tok.encode_chat(messages)
    sot, eot = tok.start_of_turn_id, tok.end_of_turn_id
    assert ids[:2] == [tok.bos_id, sot]
    assert ids.count(tok.bos_id) == 1
    assert ids.count(sot) == 2
    assert ids.count(eot) == 1
    tail = [sot, *tok.encode("model\n", add_bos=False)]
    assert ids[-len(tail) :] == tail
    assert tok.decode(ids, skip_special=False) == chat_prompt(messages)
    assert tok.decode(ids) == "user\nBe brief.\n\nWhy does bread rise?\nmodel\n"


def test_bad_role_names_it_and_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown role 'bot'; valid roles are 'system', 'user', 'assistant'"
    ):
        chat_prompt([{"role": "bot", "content": "hi"}])


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "at least one user message"),
        ([{"role": "system", "content": "Be kind."}], "must end with a user message"),
        ([{"role": "assistant", "content": "Hi."}], "expected role 'user', got 'assistant'"),
        (
            [{"role": "user", "content": "Hi."}, {"role": "user", "content": "Hello?"}],
            "expected role 'assistant', got 'user'",
        ),
        (
            [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}],
            "must end with a user message",
        ),
        (
            [{"role": "user", "content": "Hi."}, {"role": "system", "content": "Be kind."}],
            "only the first message may have the role 'system'",
        ),
        ([{"content": "Hi."}], "message 0 has no 'role' key"),
    ],
)
def test_chat_prompt_rejects_malformed_conversations(messages: list[dict[str, str]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        chat_prompt(messages)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.model"
    with pytest.raises(FileNotFoundError, match=re.escape(f"tokenizer model not found: {missing}")):
        Tokenizer(missing)


def test_file_that_is_not_a_model_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.model"
    bogus.write_text("this is not a protobuf")
    with pytest.raises(ValueError, match=re.escape(f"{bogus} is not a SentencePiece model")):
        Tokenizer(bogus)


def test_model_without_gemma_pieces_is_rejected(tmp_path: Path) -> None:
    # SentencePiece's defaults: <unk>, <s>, </s> and no pad, so Gemma's <pad> is the first one missing.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=100,
        minloglevel=2,
    )
    plain = tmp_path / "plain.model"
    plain.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match=re.escape(f"{plain}: the tokenizer has no '<pad>' piece")):
        Tokenizer(plain)


def test_training_is_deterministic(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path)
    first = train_tokenizer(corpus, tmp_path / "first", SMALL_VOCAB)
    second = train_tokenizer([corpus], tmp_path / "again" / "second", SMALL_VOCAB)
    assert first.read_bytes() == second.read_bytes()


def _packaged_sample() -> str:
    return (resources.files("gemma_runtime") / "data" / "sample.txt").read_text(encoding="utf-8")


def test_packaged_tiny_tokenizer() -> None:
    tiny = Tokenizer.tiny()
    assert tiny.vocab_size == 1024
    assert (tiny.pad_id, tiny.eos_id, tiny.bos_id, tiny.unk_id) == (0, 1, 2, 3)
    sentence = _packaged_sample().split("\n\n")[0].split(". ")[0] + "."
    assert len(sentence) > 20
    ids = tiny.encode(sentence)
    assert tiny.decode(ids) == sentence
    # Learned on this text, so words become few pieces rather than letters or bytes.
    assert len(ids) < len(sentence) / 2


def test_sample_corpus_is_plain_prose_of_the_agreed_size() -> None:
    sample = _packaged_sample()
    assert 40_000 <= len(sample.encode("utf-8")) <= 80_000
    assert sample.isascii()
    assert len(sample.split("\n\n")) > 50


def test_build_tiny_regenerates_the_packaged_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = resources.files("gemma_runtime") / "data"
    with resources.as_file(data / "sample.txt") as sample:
        shutil.copyfile(sample, tmp_path / "sample.txt")
    assert tokenizer_module.main(["build-tiny", "--data-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("tiny_tokenizer.model", "tiny_gemma4_tokenizer.model"):
        assert name in printed
        rebuilt = (tmp_path / name).read_bytes()
        assert rebuilt == (data / name).read_bytes(), (
            f"data/{name} is stale: run python -m gemma_runtime.tokenizer build-tiny"
        )
    assert Tokenizer.tiny(gemma4=True).gemma4
    assert Tokenizer.tiny(gemma4=True).vocab_size == Tokenizer.tiny().vocab_size == 1024
