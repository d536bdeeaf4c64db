"""The repository's shape: no top-level `operator` shadows the standard library, the operator
distribution resolves without JAX and the runtime without kopf, both console scripts run, and
`make help` documents every target."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gemma_operator
import gemma_runtime

REPO = Path(__file__).resolve().parents[2]


def test_import_operator_from_the_repo_root_is_the_standard_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not out.startswith(str(REPO))
    assert Path(out).name == "operator.py"
    assert not (REPO / "operator" / "__init__.py").exists()


def _resolve(folder: str) -> set[str]:
    """Names of every distribution pip would install for ``folder`` into an empty environment."""
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--report",
            "-",
            str(REPO / folder),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return {item["metadata"]["name"].lower() for item in json.loads(report)["install"]}


@pytest.mark.slow
def test_installing_the_operator_brings_no_jax() -> None:
    names = _resolve("operator")
    assert {"kopf", "kubernetes", "pydantic", "jinja2", "pyyaml"} <= names
    assert not names & {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint"}


@pytest.mark.slow
def test_installing_the_runtime_brings_no_kopf() -> None:
    names = _resolve("runtime")
    assert {"jax", "flax", "optax", "orbax-checkpoint", "sentencepiece", "safetensors"} <= names
    assert not names & {"kopf", "kubernetes"}


@pytest.mark.parametrize(
    ("command", "version"),
    [("gemma-operator", gemma_operator.__version__), ("gemma-runtime", gemma_runtime.__version__)],
)
def test_console_scripts_print_their_version(command: str, version: str) -> None:
    script = Path(sys.executable).with_name(command)
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{command} {version}"


def test_make_help_lists_every_target_with_one_line() -> None:
    makefile = (REPO / "Makefile").read_text()
    phony = {t for line in re.findall(r"^\.PHONY: (.+)$", makefile, re.M) for t in line.split()}
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    listed = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+)\s+(.+)$", plain, re.M)}
    assert phony <= set(listed), f"targets missing from make help: {phony - set(listed)}"
    assert all(description.strip() for description in listed.values())
