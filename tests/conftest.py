"""Shared pytest setup: tiers by folder, warnings as errors (pyproject), and CI's tier checks.

Tiers: ``unit`` (tests/unit, tests/contract), ``runtime`` (tests/runtime: JAX on CPU, parity against
reference implementations in their own cached venvs), ``cluster`` (tests/cluster: the real control plane),
``e2e`` (tests/e2e: kind, needs Docker), ``tpu`` (tests/tpu: our steps compiled for TPU slices by XLA's
TPU compiler, libtpu, on the CPU), ``gpu`` (tests/gpu: opt-in with ``--gpu``).
``GEMMA_REQUIRE_TIERS=unit,cluster`` (set by CI) fails the run when a named tier selected no test. A
session with cluster or pods tests finds or builds the Go parts they need (tests/cluster/harness/parts.py)
in a low-priority process beside the tests that need none, which run first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cluster.harness.parts import Background

TIER_FOLDERS = {
    "runtime": "runtime", "cluster": "cluster", "e2e": "e2e", "pods": "pods", "tpu": "tpu", "gpu": "gpu"
}  # fmt: skip
TESTS_ROOT = Path(__file__).parent
# The tiers whose tests need the Go parts. They run last; the parts build beside the tests before them.
NEEDS_PARTS = ("cluster", "pods")
BUILD: pytest.StashKey[Background] = pytest.StashKey()

# The test environment has libtpu (for the tpu tier's compiler): without a platform named, every JAX
# process here would first try to start a TPU backend (and print libtpu's warnings). Tests that need
# another platform, or none, set JAX_PLATFORMS themselves.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gpu", action="store_true", default=False, help="run the gpu tier (needs an accelerator)"
    )


def docker_unavailable_reason() -> str | None:
    """Why kind cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "kind e2e skipped: no docker command on this machine"
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=20)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "kind e2e skipped: the docker client is installed but no Docker engine answers"
    return None


def tier_of(item: pytest.Item) -> str:
    relative = Path(str(item.path)).relative_to(TESTS_ROOT)
    return TIER_FOLDERS.get(relative.parts[0], "unit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docker_reason: str | None = None
    for item in items:
        tier = tier_of(item)
        if tier != "unit":
            item.add_marker(getattr(pytest.mark, tier))
    # Markers are added before `-m` deselection runs, so `-m 'not cluster'` works on folders too.
    if any(tier_of(item) == "e2e" for item in items):
        docker_reason = docker_unavailable_reason()
    # Stable: modules stay whole and in order; the tests that need no Go part first.
    items.sort(key=lambda item: tier_of(item) in NEEDS_PARTS)
    for item in items:
        tier = tier_of(item)
        if tier == "e2e" and docker_reason:
            item.add_marker(pytest.mark.skip(reason=docker_reason))
        if tier == "gpu" and not config.getoption("--gpu"):
            item.add_marker(
                pytest.mark.skip(reason="gpu tier skipped: pass --gpu on a machine with an accelerator")
            )


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    required = [t for t in os.environ.get("GEMMA_REQUIRE_TIERS", "").split(",") if t]
    counts: dict[str, int] = {}
    for item in session.items:
        counts[tier_of(item)] = counts.get(tier_of(item), 0) + 1
    empty = [tier for tier in required if counts.get(tier, 0) == 0]
    if empty:
        raise pytest.UsageError(f"GEMMA_REQUIRE_TIERS: no test selected in tier(s) {', '.join(empty)}")
    if any(counts.get(tier) for tier in NEEDS_PARTS) and not session.config.option.collectonly:
        from tests.cluster.harness.parts import Background

        session.config.stash[BUILD] = Background()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Wait for the Go parts before the first test that needs them, outside every test's timeout (this
    wrapper is outside pytest-timeout's; a cold build is longer than one); a part that could not be
    built is reported again by the tests that need it."""
    build = item.config.stash.get(BUILD, None)
    if build is not None and tier_of(item) in NEEDS_PARTS:
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        build.wait(log=reporter.write_line if reporter is not None else print)
    yield


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = session.config.stash.get(BUILD, None)
    if build is not None:
        build.stop()
