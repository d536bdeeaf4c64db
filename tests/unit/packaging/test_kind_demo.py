"""`make kind-demo` without a Docker engine stops at once with one line saying why (where Docker
exists it runs the kind demo, minutes long, so this test then leaves it to the e2e tier)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.api_cases import REPO
from tests.conftest import docker_unavailable_reason


def test_without_docker_kind_demo_says_why_in_one_line() -> None:
    reason = docker_unavailable_reason()
    if reason is None:
        pytest.skip("a Docker engine answers here: the kind demo would really run")
    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("make kind-demo needs Docker (")
