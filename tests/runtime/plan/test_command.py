"""``gemma-runtime plan``'s command line without compiling: flags and config files become the same
ServeConfig or TrainConfig the runtime reads (an unset batch planned as the largest that fits, as the
operator fills it), a GPU or the CPU is answered by the memory model alone, and bad input is a clear
error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from gemma_runtime.cli import build_parser, main
from gemma_runtime.plan import command


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["plan", *argv])


def test_flags_make_the_serving_config_of_the_quickstart_server() -> None:
    args = _args("--variant", "gemma2-9b", "--accelerator", "v5e", "--topology", "2x4")
    config = command.serve_config(args)
    assert config.accelerator is not None
    assert (config.accelerator.type, config.accelerator.topology) == ("v5e", "2x4")
    assert (config.max_sequence_length, config.max_prefill_length) == (4096, 1024)
    assert command.auto_batch(args)
    assert not command.auto_batch(_args("--variant", "gemma2-9b", "--max-batch-size", "8"))
    same = command.serve_config(_args("--variant", "gemma2-9b", "--accelerator", "v5e:2x4", "--mesh", "1x8"))
    assert same.accelerator == config.accelerator
    assert same.mesh is not None
    assert (same.mesh.data, same.mesh.tensor) == (1, 8)


def test_a_runtime_config_file_is_planned_as_written(tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    document = {
        "kind": "serve",
        "model": {"variant": "gemma2-9b"},
        "served_model_name": "gemma2-9b-it",
        "max_batch_size": 8,
        "max_sequence_length": 2048,
        "accelerator": {"type": "v5e", "topology": "2x4"},
    }
    path.write_text(yaml.safe_dump(document))
    args = _args("--config", str(path))
    config = command.serve_config(args)
    assert (config.max_batch_size, config.max_sequence_length) == (8, 2048)
    assert not command.auto_batch(args)


def test_training_flags_fill_one_row_per_device() -> None:
    args = _args("--train", "--variant", "gemma2-9b", "--accumulation", "2", "--remat", "full")
    config = command.train_config(args, devices=16)
    assert config.training.global_batch_size == 32
    assert (config.training.remat, config.training.gradient_accumulation_steps) == ("full", 2)
    assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (1, -1, 1)
    assert (config.training.attention, config.training.scan_layers) == ("auto", True)
    unrolled = command.train_config(
        _args("--train", "--variant", "gemma2-9b", "--attention", "xla", "--no-scan-layers"), devices=16
    )
    assert (unrolled.training.attention, unrolled.training.scan_layers) == ("xla", False)


def test_a_gpu_or_the_cpu_is_answered_by_the_memory_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--variant", "gemma2-9b", "--accelerator", "nvidia-l4:2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("memory model (no compiler for cuda): gemma2-9b bfloat16 on 2 x nvidia-l4")
    assert main(["plan", "--variant", "tiny"]) == 0  # no accelerator: the CPU, the default batch
    assert "tiny float32 on cpu (mesh data x tensor = 1x1), 32 slots" in capsys.readouterr().out
    assert main(["plan", "--variant", "gemma2-27b", "--accelerator", "nvidia-l4:1"]) == 1
    assert "does not fit (memory model)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--train", "--variant", "gemma2-9b"], "give --accelerator"),
        (["--train", "--variant", "gemma2-9b", "--accelerator", "nvidia-l4:8"], "compiles for a TPU slice"),
        (["--variant", "gemma2-9b", "--accelerator", "v5e:3x3"], "topology '3x3' is not valid for TPU v5e"),
        (["--variant", "gemma2-9b", "--accelerator", "v5e:2x4", "--mesh", "8"], "expected DATAxTENSOR"),
    ],
)
def test_bad_input_is_a_clear_error(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *argv]) == 2
    assert error in capsys.readouterr().err
