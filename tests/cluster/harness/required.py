"""The cluster tier's one rule for a part it cannot find or build: skip with the reason, or fail when
``GEMMA_REQUIRE_CLUSTER=1`` (CI), where a missing part must never pass silently."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.cluster.harness.binaries import BuildError

T = TypeVar("T")


def required(what: str, build: Callable[[], T]) -> T:
    """``build()``, or a skip (a failure under GEMMA_REQUIRE_CLUSTER=1) naming ``what`` and why."""
    try:
        return build()
    except BuildError as err:
        if os.environ.get("GEMMA_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"GEMMA_REQUIRE_CLUSTER=1 but no {what}: {err}")
        pytest.skip(f"no {what}, skipped: {err}")
