"""The operator-runtime contract for training: every ConfigMap the operator renders for a GemmaTraining
validates as gemma_runtime.config.TrainConfig."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.training import render_workload
from gemma_runtime.config import TrainConfig
from tests.api_cases import SAMPLE_FILES, load, merge

TRAININGS = [p for p in SAMPLE_FILES if load(p)["kind"] == "GemmaTraining"]


@pytest.mark.parametrize("path", TRAININGS, ids=lambda p: p.stem)
def test_rendered_config_is_a_valid_train_config(path: Path) -> None:
    doc = merge(load(path), {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}})
    (config_map,) = [c for c in render_workload(doc, parse(doc), Settings(), 0) if c["kind"] == "ConfigMap"]
    config = TrainConfig.model_validate(yaml.safe_load(config_map["data"]["runtime.yaml"]))
    assert config.name == doc["metadata"]["name"]
    assert config.training.steps == doc["spec"]["training"]["steps"]
    assert config.num_slices == doc["spec"]["accelerator"].get("numSlices", 1)
