"""Training data: read JSONL or text files, tokenize, pack documents into fixed-length rows, and serve
global batches as a pure function of the step.

Because batch ``i`` depends only on (dataset, seed, i), the data position a checkpoint needs is the step
itself: a resumed run sees exactly the batches the uninterrupted run would have seen, and every process
agrees on the global batch without talking to the others (each builds only the shards it holds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gemma_runtime.tokenizer import Tokenizer

log = logging.getLogger(__name__)
SUFFIXES = {"jsonl": (".jsonl", ".json"), "text": (".txt", ".text", ".md")}


class DataError(ValueError):
    """The dataset is missing, empty or malformed; the message names the file (and line)."""


def files(path: Path, fmt: str) -> list[Path]:
    """The dataset's files: ``path`` itself, or its files with the format's suffixes, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES[fmt])
    if not found:
        raise DataError(f"{path}: no {'/'.join(SUFFIXES[fmt])} files in this folder")
    return found


def documents(path: Path, fmt: str, text_field: str = "text") -> Iterator[str]:
    """JSONL: one document per line (its ``text_field``); text: paragraphs split by blank lines."""
    for file in files(path, fmt):
        if fmt == "text":
            yield from (p.strip() for p in file.read_text().split("\n\n") if p.strip())
            continue
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{file}:{number}: not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise DataError(f"{file}:{number}: no string field {text_field!r}")
            yield record[text_field]


@dataclasses.dataclass(frozen=True)
class Packed:
    """Rows of ``length`` tokens; ``segments`` numbers the documents in a row from 1 (0 = padding) and
    ``positions`` restart at 0 with every document."""

    tokens: np.ndarray  # [R, L] int32
    segments: np.ndarray  # [R, L] int32
    positions: np.ndarray  # [R, L] int32

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])


def pack(docs: Sequence[Sequence[int]], length: int) -> Packed:
    """Greedy packing in order: documents follow each other in a row; one longer than the room left
    continues in the next row (as a new segment), so no token is dropped; the last row is padded."""
    stream = np.fromiter((t for d in docs for t in d), np.int32)
    flat_ids = np.repeat(np.arange(len(docs), dtype=np.int32), [len(d) for d in docs])
    rows = -(-len(stream) // length)
    pad = rows * length - len(stream)
    tokens = np.pad(stream, (0, pad)).reshape(rows, length)
    doc_ids = np.pad(flat_ids, (0, pad), constant_values=-1).reshape(rows, length)
    # A new segment starts where the document changes or a row starts; its positions restart at 0.
    new = np.ones_like(doc_ids, bool)
    new[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    real = doc_ids >= 0
    segments = np.where(real, np.cumsum(new, axis=1), 0).astype(np.int32)
    index = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
    positions = index - np.maximum.accumulate(np.where(new, index, 0), axis=1)
    positions = np.where(real, positions, 0).astype(np.int32)
    return Packed(tokens, segments, positions)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Model inputs and next-token targets; ``weights`` is 1 where a target exists in the same segment."""

    tokens: np.ndarray  # [B, L] int32
    positions: np.ndarray  # [B, L] int32
    segments: np.ndarray  # [B, L] int32
    targets: np.ndarray  # [B, L] int32
    weights: np.ndarray  # [B, L] float32

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        return (self.tokens, self.positions, self.segments, self.targets, self.weights)


class Dataset:
    """Packed rows and a seeded order per epoch; ``batch(step)`` is the global batch of that step."""

    def __init__(self, packed: Packed, batch_size: int, seed: int) -> None:
        if packed.rows == 0:
            raise DataError("the dataset has no tokens")
        self.packed, self.batch_size, self.seed = packed, batch_size, seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.packed.rows)}
        return self._orders[epoch]

    def rows_for(self, step: int) -> np.ndarray:
        """Row indices of the global batch of ``step``: the stream of epoch permutations, cut in batches."""
        n, out = self.packed.rows, []
        for i in range(step * self.batch_size, (step + 1) * self.batch_size):
            out.append(self._order(i // n)[i % n])
        return np.asarray(out)

    def batch(self, step: int) -> Batch:
        rows = self.rows_for(step)
        tokens, segments = self.packed.tokens[rows], self.packed.segments[rows]
        targets = np.zeros_like(tokens)
        targets[:, :-1] = tokens[:, 1:]
        same = np.zeros_like(tokens, bool)
        same[:, :-1] = (segments[:, 1:] == segments[:, :-1]) & (segments[:, :-1] > 0)
        return Batch(tokens, self.packed.positions[rows], segments, targets, same.astype(np.float32))

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.packed.rows


def load(path: Path, fmt: str, text_field: str, tokenizer: Tokenizer, length: int) -> Packed:
    """Tokenize every document (bos first, eos last) and pack; logs the rate."""
    started = time.monotonic()
    docs = [tokenizer.encode(text, add_bos=True, add_eos=True) for text in documents(path, fmt, text_field)]
    if not docs:
        raise DataError(f"{path}: no documents")
    packed = pack(docs, length)
    seconds = max(time.monotonic() - started, 1e-9)
    tokens = sum(len(d) for d in docs)
    log.info(
        "data: %d documents, %d tokens packed into %d rows of %d in %.2f s (%.0f tokens/s)",
        len(docs),
        tokens,
        packed.rows,
        length,
        seconds,
        tokens / seconds,
    )
    return packed
