"""Gemma's tokenizer (a SentencePiece tokenizer.model or a Hugging Face tokenizer.json), its chat
templates, and training of small SentencePiece tokenizers.

Special ids are always looked up by piece: Gemma 1/2 and Gemma 3 put the turn markers at different ids,
and our own tiny tokenizer at yet others. The pieces also pick the chat format: a vocabulary with
``<|turn>`` and ``<turn|>`` is Gemma 4's, otherwise Gemma 1-3's ``<start_of_turn>`` / ``<end_of_turn>``.
No JAX here, so the server and data tools import this cheaply.

Regenerate the packaged tiny tokenizer with ``python -m gemma_runtime.tokenizer build-tiny``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import sentencepiece as spm

PAD_PIECE = "<pad>"
EOS_PIECE = "<eos>"
BOS_PIECE = "<bos>"
UNK_PIECE = "<unk>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
# Gemma 4's control pieces (Google's prompt-formatting page for Gemma 4 and its chat_template.jinja).
TURN_OPEN = "<|turn>"
TURN_CLOSE = "<turn|>"
THINK = "<|think|>"
CHANNEL_OPEN = "<|channel>"
CHANNEL_CLOSE = "<channel|>"
GEMMA4_PIECES = (TURN_OPEN, TURN_CLOSE, THINK, CHANNEL_OPEN, CHANNEL_CLOSE)
# With thinking off, the larger Gemma 4 models' template (12B, 26B A4B, 31B; not E2B, E4B) ends the
# generation prompt with an empty, closed thought channel.
EMPTY_THOUGHT = f"{CHANNEL_OPEN}thought\n{CHANNEL_CLOSE}"

CHAT_ROLES = ("system", "user", "assistant")
# Gemma calls the assistant "model" in its turns; Gemma 1-3 have no system turn at all, Gemma 4 has one.
_TURN_NAMES = {"user": "user", "assistant": "model"}

TINY_VOCAB_SIZE = 1024
TINY_TOKENIZER = "tiny_tokenizer.model"  # the tiny preset's: Gemma 1-3's turn markers
TINY_GEMMA4_TOKENIZER = "tiny_gemma4_tokenizer.model"  # the tiny Gemma 4 presets': Gemma 4's pieces
SAMPLE_CORPUS = "sample.txt"
# The source tree's data folder: build-tiny rewrites the file that is checked in, not an installed copy.
_SOURCE_DATA = Path(__file__).parent / "data"


# The tokenizer files a checkpoint folder may hold, in the order they are looked for.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def find_tokenizer(folder: str | os.PathLike[str]) -> Path | None:
    """The tokenizer file in ``folder``: SentencePiece's tokenizer.model, else Hugging Face's
    tokenizer.json (what Gemma 4's repositories ship); None when it has neither."""
    for name in TOKENIZER_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


class _SentencePiece:
    """A SentencePiece model (tokenizer.model)."""

    def __init__(self, path: Path) -> None:
        try:
            proto = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"tokenizer model not found: {path}") from None
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"{path} is not a SentencePiece model ({error})") from error
        self.size: int = self._sp.get_piece_size()

    def piece_id(self, piece: str) -> int | None:
        # piece_to_id answers unk's id for an unknown piece, so check the round trip.
        token = int(self._sp.piece_to_id(piece))
        return token if self._sp.id_to_piece(token) == piece else None

    def piece(self, token: int) -> str:
        return str(self._sp.id_to_piece(token))

    def is_control(self, token: int) -> bool:
        return bool(self._sp.is_control(token))

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: list[int]) -> str:
        return str(self._sp.decode(ids))


class _TokenizerJson:
    """A Hugging Face tokenizer.json, run by the ``tokenizers`` library; its added tokens marked special
    are the control pieces."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        try:
            self._tok = HfTokenizer.from_file(str(path))
        except Exception as error:  # the library raises a bare Exception on a malformed file
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json ({error})") from error
        self.size = int(self._tok.get_vocab_size(with_added_tokens=True))
        added = self._tok.get_added_tokens_decoder().items()
        self._control = frozenset(token for token, added_token in added if added_token.special)

    def piece_id(self, piece: str) -> int | None:
        token = self._tok.token_to_id(piece)
        return None if token is None else int(token)

    def piece(self, token: int) -> str:
        return str(self._tok.id_to_token(token))

    def is_control(self, token: int) -> bool:
        return token in self._control

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=False))


class Tokenizer:
    """Gemma's tokenizer from a SentencePiece model (tokenizer.model) or a Hugging Face tokenizer.json
    (a folder: whichever of the two it holds), with Gemma's special pieces (``<pad>``, ``<eos>``,
    ``<bos>``, ``<unk>`` and the turn markers: ``<|turn>`` / ``<turn|>`` in Gemma 4's vocabulary, else
    ``<start_of_turn>`` / ``<end_of_turn>``), each required and found by piece, not by a fixed id.
    ``gemma4`` says which chat format :meth:`encode_chat` writes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            found = find_tokenizer(self.path)
            if found is None:
                raise FileNotFoundError(f"no {' or '.join(TOKENIZER_FILES)} in {self.path}")
            self.path = found
        self._pieces = _TokenizerJson(self.path) if self.path.suffix == ".json" else _SentencePiece(self.path)
        self.vocab_size: int = self._pieces.size
        self.pad_id = self._piece_id(PAD_PIECE)
        self.eos_id = self._piece_id(EOS_PIECE)
        self.bos_id = self._piece_id(BOS_PIECE)
        self.unk_id = self._piece_id(UNK_PIECE)
        self.gemma4 = self._has_piece(TURN_OPEN) and self._has_piece(TURN_CLOSE)
        opener, closer = (TURN_OPEN, TURN_CLOSE) if self.gemma4 else (START_OF_TURN, END_OF_TURN)
        self.start_of_turn_id = self._piece_id(opener)
        self.end_of_turn_id = self._piece_id(closer)
        # Gemma 4's control pieces this vocabulary has: encode_chat maps each to its id itself.
        present = [piece for piece in GEMMA4_PIECES if self.gemma4 and self._has_piece(piece)]
        self._markers = {piece: self._piece_id(piece) for piece in present}
        self._marker_split = re.compile(f"({'|'.join(map(re.escape, present))})")
        # Generation ends at either: a bare completion emits <eos>, a chat answer closes its turn.
        self.stop_ids: tuple[int, ...] = (self.eos_id, self.end_of_turn_id)
        self._special_ids = frozenset(
            (self.pad_id, self.eos_id, self.bos_id, self.start_of_turn_id, self.end_of_turn_id)
        )

    @classmethod
    def tiny(cls, *, gemma4: bool = False) -> Tokenizer:
        """The packaged tokenizer of the ``tiny`` model preset (vocabulary 1024), or with ``gemma4`` that
        of the ``tiny-gemma4-*`` presets (the same corpus and size, Gemma 4's control pieces)."""
        name = TINY_GEMMA4_TOKENIZER if gemma4 else TINY_TOKENIZER
        resource = resources.files("gemma_runtime") / "data" / name
        with resources.as_file(resource) as path:
            return cls(path)  # the model is read eagerly, so a temporary extraction may vanish after

    def _has_piece(self, piece: str) -> bool:
        return self._pieces.piece_id(piece) is not None

    def _piece_id(self, piece: str) -> int:
        token = self._pieces.piece_id(piece)
        if token is None:
            raise ValueError(f"{self.path}: the tokenizer has no {piece!r} piece")
        return token

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str, *, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``; turn markers written in the text become their single ids."""
        ids = self._pieces.encode(text)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``; pad, bos, eos, the turn markers and other control pieces are dropped unless
        ``skip_special`` is false. Accepts NumPy integers as well as ints."""
        kept: list[int] = []
        for raw in ids:
            token = int(raw)
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside the vocabulary (size {self.vocab_size})")
            if skip_special and (token in self._special_ids or self._pieces.is_control(token)):
                continue
            kept.append(token)
        if skip_special:
            return self._pieces.decode(kept)
        # SentencePiece always hides control pieces when decoding, so spell them out one by one.
        return "".join(
            self._pieces.piece(token) if self._pieces.is_control(token) else self._pieces.decode([token])
            for token in kept
        )

    def encode_chat(
        self, messages: Sequence[Mapping[str, str]], *, thinking: bool = False, empty_thought: bool = False
    ) -> list[int]:
        """Ids of the chat prompt of this vocabulary's format, with one bos id (``<bos>`` is a control
        piece, not parsed text): :func:`gemma4_chat_prompt` for Gemma 4's vocabulary, else
        :func:`chat_prompt`. ``thinking`` and ``empty_thought`` are Gemma 4's options (see there);
        ``empty_thought`` comes from the variant (:data:`gemma_runtime.variants.GEMMA4_EMPTY_THOUGHT`)."""
        if not self.gemma4:
            if thinking or empty_thought:
                raise ValueError("thinking and the empty thought channel are Gemma 4 chat options")
            prompt = chat_prompt(messages)
            return self.encode(prompt.removeprefix(BOS_PIECE), add_bos=True)
        if thinking:
            self._piece_id(THINK)
        if empty_thought:
            self._piece_id(CHANNEL_OPEN)
            self._piece_id(CHANNEL_CLOSE)
        prompt = gemma4_chat_prompt(messages, thinking=thinking, empty_thought=empty_thought)
        # The control pieces become their ids here rather than by the tokenizer parsing the text:
        # SentencePiece would spell out any that the model keeps as control pieces.
        ids = [self.bos_id]
        for part in self._marker_split.split(prompt.removeprefix(BOS_PIECE)):
            if part in self._markers:
                ids.append(self._markers[part])
            elif part:
                ids.extend(self._pieces.encode(part))
        return ids


def _split_system(messages: Sequence[Mapping[str, str]]) -> tuple[str | None, list[tuple[int, str, str]]]:
    """A leading system message's content, and (index, role, content) of the others; both templates allow
    a system message only first."""
    if not messages:
        raise ValueError("a chat needs at least one user message")
    system: str | None = None
    rest: list[tuple[int, str, str]] = []
    for index, message in enumerate(messages):
        role, content = _role_and_content(index, message)
        if role != "system":
            rest.append((index, role, content))
        elif index == 0:
            system = content
        else:
            raise ValueError(f"message {index}: only the first message may have the role 'system'")
    return system, rest


def chat_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """Gemma's chat template: ``<bos>``, then ``<start_of_turn>{user|model}\\n{text}<end_of_turn>\\n``
    per message, then an open ``<start_of_turn>model\\n`` for the answer.

    Messages are ``{"role": ..., "content": ...}`` with roles ``system``, ``user`` and ``assistant``.
    Gemma has no system turn, so a leading system message is folded into the first user turn, separated
    by a blank line. As in Gemma's own template, content is stripped and turns must alternate, starting
    and ending with the user.
    """
    system, others = _split_system(messages)
    turns: list[tuple[str, str]] = []
    for index, role, content in others:
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"message {index}: expected role {expected!r}, got {role!r}; "
                "turns alternate user, assistant, user, ... after an optional system message"
            )
        turns.append((role, content))
    if not turns or turns[-1][0] != "user":
        raise ValueError("a chat prompt must end with a user message, which the model then answers")
    if system is not None:
        turns[0] = ("user", f"{system}\n\n{turns[0][1]}")
    body = "".join(f"{START_OF_TURN}{_TURN_NAMES[role]}\n{text}{END_OF_TURN}\n" for role, text in turns)
    return f"{BOS_PIECE}{body}{START_OF_TURN}model\n"


def gemma4_chat_prompt(
    messages: Sequence[Mapping[str, str]], *, thinking: bool = False, empty_thought: bool = False
) -> str:
    """Gemma 4's chat template (Google's ``chat_template.jinja`` of 2026-07-09, text messages only):
    ``<bos>``, a system turn ``<|turn>system\\n{text}<turn|>\\n`` for a leading system message (or for
    thinking), ``<|turn>{user|model}\\n{text}<turn|>\\n`` per message, then ``<|turn>model\\n`` for the
    answer.

    ``thinking`` puts ``<|think|>`` at the top of the system turn (off by default, as in the template).
    ``empty_thought`` is the larger models' template (12B, 26B A4B, 31B): with thinking off their
    generation prompt closes an empty thought channel; E2B's and E4B's do not. As in the template,
    content is stripped, a model turn drops any ``<|channel>...<channel|>`` thought it carries, and
    consecutive assistant messages make one model turn. Turns need not alternate, but the last is the
    user's, which the model then answers.
    """
    system, others = _split_system(messages)
    turns = [(role, _drop_thoughts(text) if role == "assistant" else text) for _, role, text in others]
    if not turns or turns[-1][0] != "user":
        raise ValueError("a chat prompt must end with a user message, which the model then answers")
    parts = [BOS_PIECE]
    if thinking or system is not None:
        think = f"{THINK}\n" if thinking else ""
        parts.append(f"{TURN_OPEN}system\n{think}{system or ''}{TURN_CLOSE}\n")
    for index, (role, text) in enumerate(turns):
        continued = role == "assistant" and index > 0 and turns[index - 1][0] == "assistant"
        continues = role == "assistant" and index + 1 < len(turns) and turns[index + 1][0] == "assistant"
        parts.append(("" if continued else f"{TURN_OPEN}{_TURN_NAMES[role]}\n") + text)
        parts.append("" if continues else f"{TURN_CLOSE}\n")
    parts.append(f"{TURN_OPEN}model\n")
    if empty_thought and not thinking:
        parts.append(EMPTY_THOUGHT)
    return "".join(parts)


def _drop_thoughts(text: str) -> str:
    # The template's strip_thinking: of each piece before a <channel|>, keep what precedes its <|channel>.
    return "".join(part.split(CHANNEL_OPEN)[0] for part in text.split(CHANNEL_CLOSE)).strip()


def _role_and_content(index: int, message: Mapping[str, str]) -> tuple[str, str]:
    try:
        role, content = message["role"], message["content"]
    except KeyError as missing:
        raise ValueError(f"message {index} has no {missing.args[0]!r} key") from None
    if role not in CHAT_ROLES:
        valid = ", ".join(repr(name) for name in CHAT_ROLES)
        raise ValueError(f"message {index} has the unknown role {role!r}; valid roles are {valid}")
    return role, content.strip()


def train_tokenizer(
    corpus: Path | list[Path],
    output_prefix: Path,
    vocab_size: int,
    *,
    symbols: Sequence[str] = (START_OF_TURN, END_OF_TURN),
) -> Path:
    """Train a SentencePiece BPE model with Gemma's conventions and write ``{output_prefix}.model``.

    Ids pad 0, eos 1, bos 2, unk 3; the turn markers (``symbols``: Gemma 1-3's by default, or
    :data:`GEMMA4_PIECES`) are user-defined pieces (so they are recognised in text); byte fallback,
    split digits, no normalisation and no dummy prefix, as Gemma's tokenizer.
    The result is byte-for-byte reproducible: one thread, every line used in order, and the corpus fed
    from memory so no file name is recorded in the model.
    """
    paths = [corpus] if isinstance(corpus, Path) else list(corpus)
    lines = [line for path in paths for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"the tokenizer corpus is empty: {', '.join(map(str, paths))}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece=PAD_PIECE,
        eos_piece=EOS_PIECE,
        bos_piece=BOS_PIECE,
        unk_piece=UNK_PIECE,
        user_defined_symbols=list(symbols),
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    output = Path(f"{output_prefix}.model")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(model.getvalue())
    return output


def build_tiny(data_dir: Path = _SOURCE_DATA) -> list[Path]:
    """Retrain ``data/tiny_tokenizer.model`` and ``data/tiny_gemma4_tokenizer.model`` from
    ``data/sample.txt``."""
    corpus = data_dir / SAMPLE_CORPUS
    return [
        train_tokenizer(corpus, data_dir / TINY_TOKENIZER.removesuffix(".model"), TINY_VOCAB_SIZE),
        train_tokenizer(
            corpus,
            data_dir / TINY_GEMMA4_TOKENIZER.removesuffix(".model"),
            TINY_VOCAB_SIZE,
            symbols=GEMMA4_PIECES,
        ),
    ]


def resolve_tokenizer(tokenizer: str | None, checkpoint: str | None, variant: str) -> Tokenizer | None:
    """What serving and training read: the configured tokenizer, else tokenizer.model or tokenizer.json
    beside the checkpoint, else the packaged one of a tiny preset (``tiny``, ``tiny-gemma4-*``); None
    when there is none."""
    if tokenizer:
        return Tokenizer(tokenizer)
    beside = find_tokenizer(checkpoint) if checkpoint else None
    if beside is not None:
        return Tokenizer(beside)
    if variant.startswith("tiny-gemma4"):
        return Tokenizer.tiny(gemma4=True)
    return Tokenizer.tiny() if variant.startswith("tiny") else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemma_runtime.tokenizer")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build-tiny", help=f"retrain {TINY_TOKENIZER} and {TINY_GEMMA4_TOKENIZER} from {SAMPLE_CORPUS}"
    )
    build.add_argument(
        "--data-dir", type=Path, default=_SOURCE_DATA, help="folder with the corpus (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for output in build_tiny(args.data_dir):
        print(f"wrote {output} ({output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
