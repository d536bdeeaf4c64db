"""`gemma-runtime serve --dry-run`: the memory plan of a config, before (and without) any weights or
devices: Gemma 2 9B in bf16 fits a v5e 2x4 host at an eighth of its weights per chip and refuses one chip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma_runtime import cli


def _config(tmp_path: Path, **fields: object) -> Path:
    document = {"model": {"variant": "gemma2-9b"}, "served_model_name": "g", "dtype": "bfloat16", **fields}
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_config_for_v5e_2x4_plans_an_eighth_of_the_weights_per_chip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, accelerator={"type": "v5e", "topology": "2x4"})
    assert cli.main(["serve", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gemma2-9b bfloat16 on v5e 2x4 (mesh data x tensor = 1x8), 32 slots x 4096 tokens" in out
    assert "weights 2.15 GiB" in out  # 17.21 GiB / 8


def test_one_chip_refuses_with_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, accelerator={"type": "v5e", "topology": "1x1"})
    assert cli.main(["serve", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "does not fit: gemma2-9b bfloat16 on v5e 1x1" in err
    assert "weights 17.21 GiB + KV cache 42.02 GiB" in err
    assert "the weights alone need at least 2 chips" in err


def test_flags_override_the_accelerator_and_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--variant", "gemma2-9b", "--dtype", "bfloat16", "--accelerator", "v5e:2x4"]
    assert cli.main([*argv, "--mesh", "2x4", "--dry-run"]) == 0
    assert "(mesh data x tensor = 2x4)" in capsys.readouterr().out
    assert cli.main([*argv, "--mesh", "2x3", "--dry-run"]) == 2
    assert "data x tensor = 6, but the host has 8 chips" in capsys.readouterr().err
    assert cli.main([*argv, "--mesh", "two", "--dry-run"]) == 2
    assert "expected DATAxTENSOR" in capsys.readouterr().err
    assert cli.main(["serve", "--variant", "gemma2-9b", "--accelerator", "v5e:3x3", "--dry-run"]) == 2
    assert "topology '3x3' is not valid for TPU v5e" in capsys.readouterr().err
    # A mixture of experts may split its experts over an expert axis: DATAxEXPERTxTENSOR.
    moe = ["serve", "--variant", "gemma4-26b-a4b", "--dtype", "bfloat16", "--accelerator", "v6e:2x4"]
    assert cli.main([*moe, "--mesh", "2x2x2", "--dry-run"]) == 0
    assert "(mesh data x expert x tensor = 2x2x2)" in capsys.readouterr().out
    assert cli.main([*moe, "--mesh", "1x3x2", "--dry-run"]) == 2
    assert "data x expert x tensor = 6, but the host has 8 chips" in capsys.readouterr().err
    assert cli.main([*argv, "--mesh", "1x2x4", "--dry-run"]) == 2
    assert "expert 2 does not divide gemma2-9b's 0 experts" in capsys.readouterr().err
