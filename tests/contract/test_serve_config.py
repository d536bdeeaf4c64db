"""The operator-runtime contract: every ConfigMap the operator renders for a GemmaServer validates as
gemma_runtime.config.ServeConfig (the model the runtime parses its --config with)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.serving import render_server
from gemma_runtime.config import ServeConfig
from tests.api_cases import SAMPLE_FILES, load, merge

SERVERS = [p for p in SAMPLE_FILES if load(p)["kind"] == "GemmaServer"]


@pytest.mark.parametrize("path", SERVERS, ids=lambda p: p.stem)
def test_rendered_config_is_a_valid_serve_config(path: Path) -> None:
    doc = merge(load(path), {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}})
    (config_map,) = [c for c in render_server(doc, parse(doc), Settings()) if c["kind"] == "ConfigMap"]
    config = ServeConfig.model_validate(yaml.safe_load(config_map["data"]["runtime.yaml"]))
    assert config.served_model_name == doc["metadata"]["name"]
    assert config.model.variant == doc["spec"]["model"]["variant"]
