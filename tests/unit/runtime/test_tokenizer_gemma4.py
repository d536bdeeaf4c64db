"""Gemma 4's chat format in the tokenizer: chosen by the vocabulary's pieces, its prompt strings and ids.

Covered:
- a vocabulary with ``<|turn>`` / ``<turn|>`` is Gemma 4's: its turn ids are those pieces', the stop ids
  are eos and ``<turn|>``; a Gemma 1-3 vocabulary keeps ``<start_of_turn>`` and refuses Gemma 4's options;
- the prompt strings exactly: a user turn, a real system turn, ``<|think|>`` at the top of the system
  turn when thinking is on (with and without a system message), the larger models' empty thought
  channel only when thinking is off, multi-turn with the model's thoughts dropped from its turns,
  consecutive assistant messages as one model turn, consecutive user turns; order and role errors;
- the ids: one bos, every control piece a single id (also when the model keeps it as a control piece,
  which SentencePiece would not parse from text), decoding them gives the prompt string back; a thinking
  prompt on a vocabulary without ``<|think|>`` is refused by name.

Transformers' rendering of Google's published template is compared in
tests/runtime/test_chat_template_hf_gemma4.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sentencepiece as spm

from gemma_runtime.tokenizer import (
    CHANNEL_CLOSE,
    CHANNEL_OPEN,
    GEMMA4_PIECES,
    THINK,
    TURN_CLOSE,
    TURN_OPEN,
    Tokenizer,
    gemma4_chat_prompt,
    train_tokenizer,
)

CORPUS = """\
The train left the station at seven in the morning and reached the city before nine.
Rain fell on the garden all night, and in the morning the soil was soft and dark.
A good soup needs onions, carrots, celery, salt, pepper and a little patience.
Bread rises because yeast eats sugar in the flour and gives off small bubbles of gas.
She asked: "Why is the sky blue?" and her brother told her about scattered light.
"""
VOCAB = 320


def _corpus(folder: Path) -> Path:
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    return corpus


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("gemma4-tokenizer")
    return Tokenizer(train_tokenizer(_corpus(folder), folder / "g4", VOCAB, symbols=GEMMA4_PIECES))


def test_the_pieces_choose_gemma4(tok: Tokenizer) -> None:
    assert tok.gemma4
    assert tok.start_of_turn_id == tok.encode(TURN_OPEN, add_bos=False)[0]
    assert tok.end_of_turn_id == tok.encode(TURN_CLOSE, add_bos=False)[0]
    assert tok.stop_ids == (tok.eos_id, tok.end_of_turn_id)
    assert tok.decode([tok.start_of_turn_id, tok.end_of_turn_id], skip_special=False) == "<|turn><turn|>"


def test_gemma_1_3_vocabulary_keeps_its_format_and_refuses_gemma4_options(tmp_path: Path) -> None:
    old = Tokenizer(train_tokenizer(_corpus(tmp_path), tmp_path / "old", VOCAB))
    assert not old.gemma4
    assert old.decode([old.start_of_turn_id], skip_special=False) == "<start_of_turn>"
    for option in ({"thinking": True}, {"empty_thought": True}):
        with pytest.raises(ValueError, match="Gemma 4 chat options"):
            old.encode_chat([{"role": "user", "content": "Hi"}], **option)


USER = [{"role": "user", "content": "  Why is the sky blue?\n"}]
SYSTEM = [
    {"role": "system", "content": "Answer in one sentence. "},
    {"role": "user", "content": "What is rain?"},
]


def test_user_turn() -> None:
    assert gemma4_chat_prompt(USER) == "<bos><|turn>user\nWhy is the sky blue?<turn|>\n<|turn>model\n"


def test_larger_models_close_an_empty_thought_when_thinking_is_off() -> None:
    assert gemma4_chat_prompt(USER, empty_thought=True) == (
        "<bos><|turn>user\nWhy is the sky blue?<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    )
    assert gemma4_chat_prompt(USER, empty_thought=True, thinking=True) == (
        "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nWhy is the sky blue?<turn|>\n<|turn>model\n"
    )


def test_system_turn() -> None:
    assert gemma4_chat_prompt(SYSTEM) == (
        "<bos><|turn>system\nAnswer in one sentence.<turn|>\n"
        "<|turn>user\nWhat is rain?<turn|>\n<|turn>model\n"
    )


def test_thinking_opens_the_system_turn() -> None:
    assert gemma4_chat_prompt(SYSTEM, thinking=True) == (
        "<bos><|turn>system\n<|think|>\nAnswer in one sentence.<turn|>\n"
        "<|turn>user\nWhat is rain?<turn|>\n<|turn>model\n"
    )
    assert gemma4_chat_prompt(USER, thinking=True) == (
        "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nWhy is the sky blue?<turn|>\n<|turn>model\n"
    )


def test_conversation_drops_the_models_thoughts() -> None:
    messages = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "<|channel>thought\nA greeting.<channel|> Hello. How can I help?"},
        {"role": "user", "content": "Tell me about trains."},
    ]
    assert gemma4_chat_prompt(messages) == (
        "<bos><|turn>user\nHello!<turn|>\n<|turn>model\nHello. How can I help?<turn|>\n"
        "<|turn>user\nTell me about trains.<turn|>\n<|turn>model\n"
    )


def test_consecutive_assistant_messages_are_one_model_turn_and_users_may_follow_users() -> None:
    messages = [
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
        {"role": "assistant", "content": "First part. "},
        {"role": "assistant", "content": " second part."},
        {"role": "user", "content": "Go on."},
    ]
    assert gemma4_chat_prompt(messages) == (
        "<bos><|turn>user\nOne.<turn|>\n<|turn>user\nTwo.<turn|>\n"
        "<|turn>model\nFirst part.second part.<turn|>\n<|turn>user\nGo on.<turn|>\n<|turn>model\n"
    )


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "at least one user message"),
        ([{"role": "system", "content": "Be kind."}], "must end with a user message"),
        (
            [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}],
            "must end with a user message",
        ),
        (
            [{"role": "user", "content": "Hi."}, {"role": "system", "content": "Be kind."}],
            "only the first message may have the role 'system'",
        ),
        ([{"role": "tool", "content": "42"}], "unknown role 'tool'"),
    ],
)
def test_malformed_conversations(messages: list[dict[str, str]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        gemma4_chat_prompt(messages)


def test_encode_chat_ids(tok: Tokenizer) -> None:
    turn, close = tok.start_of_turn_id, tok.end_of_turn_id
    model = [turn, *tok.encode("model\n", add_bos=False)]
    ids = tok.encode_chat(SYSTEM)
    assert ids[:2] == [tok.bos_id, turn]
    assert ids.count(tok.bos_id) == 1
    assert (ids.count(turn), ids.count(close)) == (3, 2)
    assert ids[-len(model) :] == model
    assert tok.decode(ids, skip_special=False) == gemma4_chat_prompt(SYSTEM)
    channel_open, channel_close = (
        tok.encode(piece, add_bos=False)[0] for piece in (CHANNEL_OPEN, CHANNEL_CLOSE)
    )
    empty = [*model, channel_open, *tok.encode("thought\n", add_bos=False), channel_close]
    assert tok.encode_chat(USER, empty_thought=True)[-len(empty) :] == empty
    for options in ({"thinking": True}, {"empty_thought": True}):
        ids = tok.encode_chat(USER, **options)
        assert tok.decode(ids, skip_special=False) == gemma4_chat_prompt(USER, **options)


def _model(tmp_path: Path, user_defined: list[str], control: list[str]) -> Path:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=user_defined,
        control_symbols=control,
        byte_fallback=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    path = tmp_path / "control.model"
    path.write_bytes(model.getvalue())
    return path


def test_control_pieces_become_their_ids(tmp_path: Path) -> None:
    # A model may keep Gemma 4's pieces as control pieces, which SentencePiece never parses from text.
    model = _model(tmp_path, [TURN_OPEN, TURN_CLOSE], [THINK, CHANNEL_OPEN, CHANNEL_CLOSE])
    tok, sentencepiece = Tokenizer(model), spm.SentencePieceProcessor(model_file=str(model))
    think = sentencepiece.piece_to_id(THINK)
    assert sentencepiece.is_control(think)
    assert think not in tok.encode(THINK, add_bos=False)  # spelled out when parsed from text
    ids = tok.encode_chat(USER, thinking=True)
    system = [tok.bos_id, tok.start_of_turn_id, *tok.encode("system\n", add_bos=False), think]
    assert ids[: len(system)] == system
    assert tok.decode(ids, skip_special=False) == gemma4_chat_prompt(USER, thinking=True)


def test_thinking_needs_the_think_piece(tmp_path: Path) -> None:
    tok = Tokenizer(_model(tmp_path, [TURN_OPEN, TURN_CLOSE], []))
    assert tok.gemma4
    with pytest.raises(ValueError, match=r"has no '<\|think\|>' piece"):
        tok.encode_chat(USER, thinking=True)
    with pytest.raises(ValueError, match=r"has no '<\|channel>' piece"):
        tok.encode_chat(USER, empty_thought=True)
    assert tok.decode(tok.encode_chat(USER), skip_special=False) == gemma4_chat_prompt(USER)
