"""Packing, targets and the step-indexed batch order that makes a resume see the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gemma_runtime.tokenizer import Tokenizer
from gemma_runtime.train import data


def test_pack_keeps_every_token_and_restarts_positions_per_document() -> None:
    docs = [[2, 10, 11, 1], [2, 20, 21, 22, 23, 1], [2, 30, 1]]
    packed = data.pack(docs, 5)
    assert packed.tokens.tolist() == [[2, 10, 11, 1, 2], [20, 21, 22, 23, 1], [2, 30, 1, 0, 0]]
    # The second document starts at the end of row 0 and continues, as a new segment, in row 1.
    assert packed.segments.tolist() == [[1, 1, 1, 1, 2], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert packed.positions.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]


def test_targets_are_the_next_token_of_the_same_document_only() -> None:
    packed = data.pack([[2, 10, 11, 1], [2, 20, 1]], 8)
    batch = data.Dataset(packed, 1, seed=0).batch(0)
    assert batch.tokens.tolist() == [[2, 10, 11, 1, 2, 20, 1, 0]]
    assert batch.targets[0, :6].tolist() == [10, 11, 1, 2, 20, 1]
    # No target across the document boundary (1 -> 2), none from the last token, none in padding.
    assert batch.weights.tolist() == [[1, 1, 1, 0, 1, 1, 0, 0]]


def test_batches_are_a_pure_function_of_the_step_and_cover_each_epoch_once() -> None:
    packed = data.pack([list(range(2, 12))] * 10, 4)  # 25 rows
    a, b = data.Dataset(packed, 5, seed=7), data.Dataset(packed, 5, seed=7)
    # Asked in any order, by any process, step s gives the same rows.
    assert [a.rows_for(s).tolist() for s in range(10)] == [
        b.rows_for(s).tolist() for s in reversed(range(10))
    ][::-1]
    epoch0 = np.concatenate([a.rows_for(s) for s in range(5)])
    assert sorted(epoch0.tolist()) == list(range(25))
    epoch1 = np.concatenate([a.rows_for(s) for s in range(5, 10)])
    assert sorted(epoch1.tolist()) == list(range(25))
    assert epoch0.tolist() != epoch1.tolist()  # reshuffled every epoch
    assert data.Dataset(packed, 5, seed=8).rows_for(0).tolist() != a.rows_for(0).tolist()


def test_jsonl_and_text_documents(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n"
    )
    (tmp_path / "b.txt").write_text("first paragraph\nstill first\n\nsecond\n")
    assert list(data.documents(tmp_path, "jsonl")) == ["one", "two"]
    assert list(data.documents(tmp_path / "b.txt", "text")) == ["first paragraph\nstill first", "second"]
    packed = data.load(tmp_path / "a.jsonl", "jsonl", "text", Tokenizer.tiny(), 16)
    assert packed.rows == 1
    assert (
        int((packed.segments > 0).sum())
        == len(Tokenizer.tiny().encode("one")) + len(Tokenizer.tiny().encode("two")) + 2
    )  # each document also ends with <eos>


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', "data.jsonl:2: not JSON"),
        ('{"body": "no text field"}\n', "data.jsonl:1: no string field 'text'"),
        ('{"text": 3}\n', "data.jsonl:1: no string field 'text'"),
    ],
)
def test_bad_jsonl_names_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "data.jsonl").write_text(content)
    with pytest.raises(data.DataError, match=message):
        list(data.documents(tmp_path / "data.jsonl", "jsonl"))


def test_missing_and_empty_datasets_are_named(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="no such file or folder"):
        data.files(tmp_path / "nope", "jsonl")
    with pytest.raises(data.DataError, match=r"no \.jsonl/\.json files"):
        data.files(tmp_path, "jsonl")
