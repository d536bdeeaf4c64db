"""`gemma-runtime train`'s config: the file with the flags given laid over it, or the flags' defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from gemma_runtime.config import ConfigError
from gemma_runtime.train import command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def write_config(path: Path) -> Path:
    document = {
        "name": "from-file",
        "model": {"variant": "tiny"},
        "data": {"path": "/data/corpus.jsonl", "format": "jsonl"},
        "training": {"steps": 40, "global_batch_size": 4, "sequence_length": 64, "remat": "full"},
        "mesh": {"data": 1, "fsdp": 2, "tensor": 1},
        "checkpoints": {"directory": "/ckpt", "interval_steps": 20},
        "port": 8000,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_without_a_file_the_flags_defaults_make_the_config() -> None:
    config = command.config_from(parse())
    assert config.model.variant == "tiny"
    assert config.data.path == str(command.sample_data())
    assert config.data.format == "text"
    assert (config.training.steps, config.training.global_batch_size) == (100, 8)
    assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (1, -1, 1)
    assert config.checkpoints.directory is None
    assert config.checkpoints.interval_steps == 100
    assert (config.host, config.port) == ("127.0.0.1", 0)


def test_the_flags_given_override_the_file_and_the_rest_of_the_file_stays(tmp_path: Path) -> None:
    config_file = write_config(tmp_path / "train.yaml")
    config = command.config_from(
        parse(
            "--config", str(config_file), "--output", "/elsewhere", "--checkpoint-every", "5", "--steps", "9"
        )
    )
    assert config.checkpoints.directory == "/elsewhere"
    assert config.checkpoints.interval_steps == 5
    assert config.training.steps == 9
    # Not given: the file's values, not the flags' defaults.
    assert config.name == "from-file"
    assert config.training.global_batch_size == 4
    assert config.training.remat == "full"
    assert (config.mesh.fsdp, config.port, config.data.format) == (2, 8000, "jsonl")


def test_a_data_flag_over_a_file_takes_its_format_from_its_suffix(tmp_path: Path) -> None:
    config_file = write_config(tmp_path / "train.yaml")
    config = command.config_from(parse("--config", str(config_file), "--data", "/data/book.txt"))
    assert (config.data.path, config.data.format) == ("/data/book.txt", "text")


def test_a_bad_mesh_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--mesh '2x4': expected three integers"):
        command.config_from(parse("--mesh", "2x4"))
    with pytest.raises(ConfigError, match="or four data,fsdp,tensor,expert"):
        command.config_from(parse("--mesh", "1,1,1,1,1"))


def test_a_fourth_mesh_integer_is_the_expert_axis() -> None:
    mesh = command.config_from(parse("--mesh", "2,1,2,2")).mesh
    assert (mesh.data, mesh.fsdp, mesh.tensor, mesh.expert) == (2, 1, 2, 2)
    assert command.config_from(parse("--mesh", "1,-1,1")).mesh.expert == 1
