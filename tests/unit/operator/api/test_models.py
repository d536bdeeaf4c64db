"""The pydantic models: every sample parses and dumps back without loss, and every invalid resource
in the shared table is refused with a message that names the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gemma_operator.api import GemmaServer, GemmaTraining
from gemma_operator.api.validation import SpecError, parse
from tests.api_cases import INVALID, SAMPLE_FILES, Invalid, load, merge, sample


def _subset(small: Any, big: Any, path: str = "") -> None:
    """Every value in ``small`` is in ``big`` (numbers compare by value: YAML 1 == 1.0)."""
    if isinstance(small, dict):
        for key, value in small.items():
            assert key in big, f"{path}.{key} lost"
            _subset(value, big[key], f"{path}.{key}")
    elif isinstance(small, list):
        assert len(small) == len(big), f"{path} length changed"
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert small == big, f"{path}: {small!r} became {big!r}"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_every_sample_round_trips_without_loss(path: Path) -> None:
    doc = load(path)
    model = parse(doc)
    dumped = model.to_api()
    _subset(doc, dumped)
    assert parse(dumped) == model


def test_defaults_are_filled() -> None:
    model = parse(load(SAMPLE_FILES[0]))
    assert isinstance(model, GemmaServer)
    assert model.spec.serving.max_batch_size is None  # the largest batch that fits (render/plan.py)
    assert model.spec.update_strategy.max_surge == 0
    training = parse(load(next(p for p in SAMPLE_FILES if p.stem == "training-tiny-cpu")))
    assert isinstance(training, GemmaTraining)
    assert (training.spec.parallelism.data, training.spec.parallelism.fsdp) == (1, -1)
    assert training.spec.failure_policy.max_restarts == 3


def test_the_invalid_table_is_large_and_distinct() -> None:
    assert len(INVALID) >= 20
    assert len({case.id for case in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_pydantic_refuses_each_invalid_resource_naming_the_field(case: Invalid) -> None:
    with pytest.raises(SpecError) as refused:
        parse(case.resource())
    text = "; ".join(refused.value.problems)
    assert case.model in text
    parent, _, leaf = case.field.rpartition(".")
    # Field-level errors carry the full path; object-level ones the object's path and the field's name.
    assert case.field in text or (parent in text and leaf.split("[")[0] in text), text


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(SpecError, match="apiVersion/kind"):
        parse({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})


def test_a_bad_quantity_is_refused_at_its_own_path() -> None:
    doc = merge(sample("server-tiny-cpu"), {"spec": {"pod": {"resources": {"requests": {"cpu": "lots"}}}}})
    with pytest.raises(SpecError) as refused:
        parse(doc)
    # One problem at the field, not one per branch of int-or-string (".cpu.int", ".cpu.constrained-str").
    assert refused.value.problems == [
        "spec.pod.resources.requests.cpu: must be a Kubernetes quantity: an integer or a string such as "
        "500m, 2Gi or 1.5"
    ]


def test_the_expert_axis_must_divide_the_models_experts() -> None:
    base = sample("training-gemma4-e4b-v5e")  # 16 chips
    split = {"fsdp": -1, "expert": 2}
    with pytest.raises(SpecError, match=r"parallelism\.expert: 2 does not divide gemma4-e4b's 0 experts"):
        parse(merge(base, {"spec": {"parallelism": split}}))
    moe = merge(base, {"spec": {"model": {"variant": "gemma4-26b-a4b"}, "parallelism": split}})
    training = parse(moe)
    assert isinstance(training, GemmaTraining)
    assert (training.spec.parallelism.fsdp, training.spec.parallelism.expert) == (-1, 2)
