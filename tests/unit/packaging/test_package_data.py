"""Every file of our packages that is not Python is declared package data, so that it is in the wheel
the images install (the operator's Job and Deployment templates once were not: its image could render
nothing)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.api_cases import REPO


@pytest.mark.parametrize("project", ["operator", "runtime"])
def test_every_data_file_is_package_data(project: str) -> None:
    config = tomllib.loads((REPO / project / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"]["package-data"]
    source = REPO / project / "src"
    files = [
        p for p in source.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
        and ".egg-info" not in str(p)
    ]  # fmt: skip
    assert files
    missing = []
    for path in files:
        relative = path.relative_to(source)
        packages = [".".join(relative.parts[:i]) for i in range(1, len(relative.parts))]
        if not any(
            fnmatch(str(relative.relative_to(Path(*package.split(".")))), pattern)
            for package in packages
            for pattern in declared.get(package, [])
        ):
            missing.append(str(relative))
    assert not missing, f"not in [tool.setuptools.package-data] of {project}/pyproject.toml: {missing}"
