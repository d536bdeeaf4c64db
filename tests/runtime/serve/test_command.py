"""`gemma-runtime serve` arguments: the operator's config file alone, flags laid over it, flags alone
(a checkpoint directory is enough; a variant alone serves random weights), and errors that name the
problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma_runtime.cli import build_parser
from gemma_runtime.config import ConfigError, ServeConfig
from gemma_runtime.serve.command import config_from_args


def _config(argv: list[str]) -> ServeConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_the_operators_config_file(tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    document = {
        "kind": "serve",
        "model": {"variant": "gemma2-2b", "checkpoint": "/models/gemma", "format": "safetensors"},
        "served_model_name": "gemma",
        "max_batch_size": 8,
        "quantization": "int8",
        "port": 9000,
    }
    path.write_text(yaml.safe_dump(document))
    config = _config(["--config", str(path)])
    assert (config.model.variant, config.max_batch_size, config.quantization, config.port) == (
        "gemma2-2b",
        8,
        "int8",
        9000,
    )
    overridden = _config(["--config", str(path), "--port", "8001", "--max-batch-size", "2"])
    assert (overridden.port, overridden.max_batch_size, overridden.served_model_name) == (8001, 2, "gemma")


def test_flags_alone() -> None:
    random = _config(["--variant", "tiny", "--host", "127.0.0.1", "--max-sequence-length", "256"])
    assert (random.model.variant, random.model.checkpoint, random.served_model_name) == ("tiny", None, "tiny")
    assert random.max_prefill_length == 256
    checkpoint = _config(["--checkpoint", "/models/my-gemma"])
    assert (checkpoint.model.checkpoint, checkpoint.served_model_name) == ("/models/my-gemma", "my-gemma")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--variant"):
        _config([])
    with pytest.raises(ConfigError, match="max_batch_size"):
        _config(["--variant", "tiny", "--max-batch-size", "0"])
    with pytest.raises(ConfigError, match="no such config file"):
        _config(["--config", str(tmp_path / "missing.yaml")])
