"""`gemma-operator` parses its command line; without a command it prints help and exits 2."""

from __future__ import annotations

import pytest

from gemma_operator import __version__, cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"gemma-operator {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: gemma-operator" in capsys.readouterr().out
