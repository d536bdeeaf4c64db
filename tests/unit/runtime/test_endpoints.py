"""The termination message: what the operator reads of a runtime container after it is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemma_runtime import endpoints


def test_long_failure_messages_fit_the_kubelet_limit(tmp_path: Path) -> None:
    endpoints.write_message(tmp_path / "m", {"state": "failed", "error": "x" * 10_000})
    text = (tmp_path / "m").read_text()
    assert len(text) <= endpoints.MESSAGE_LIMIT
    assert json.loads(text)["error"].endswith("...")


def test_a_message_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints.write_message(tmp_path / "missing" / "m", {"state": "Finished"})
    assert "cannot write the termination message" in caplog.text
