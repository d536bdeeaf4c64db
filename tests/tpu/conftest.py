"""The tpu tier needs XLA's TPU compiler (libtpu, the runtime's ``tpu-plan`` extra, which ``make install``
installs): without it a test skips with the reason, or fails where ``GEMMA_REQUIRE_TIERS`` names the tier
(CI), where a missing compiler must never pass silently."""

from __future__ import annotations

import os

import pytest

from gemma_runtime.plan import topology


@pytest.fixture(autouse=True)
def _compiler() -> None:
    if topology.available():
        return
    reason = "no libtpu (pip install 'gemma-runtime[tpu-plan]', or make install)"
    if "tpu" in os.environ.get("GEMMA_REQUIRE_TIERS", "").split(","):
        pytest.fail(f"GEMMA_REQUIRE_TIERS names tpu but there is {reason}")
    pytest.skip(f"tpu tier skipped: {reason}")
