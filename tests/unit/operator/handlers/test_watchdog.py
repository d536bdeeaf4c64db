"""The operator stops when kopf gives up on a watch (kopf never starts a failed watch task again), and
kopf's own API retries never run out."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator, Sized

import pytest
from kopf._cogs.aiokits import aiotasks  # kopf's guard for its watch tasks, as the operator runs it
from kopf._core.reactor import orchestration

from gemma_operator.handlers import watchdog
from gemma_operator.handlers.startup import EndlessBackoffs


@pytest.fixture
def failures() -> Iterator[watchdog.WatchFailures]:
    handler = watchdog.install(threading.Event())
    yield handler
    logging.getLogger(watchdog.KOPF_ORCHESTRATION_LOGGER).removeHandler(handler)


def _guarded(name: str, error: Exception | None) -> None:
    async def task() -> None:
        if error is not None:
            raise error

    async def main() -> None:
        with contextlib.suppress(Exception):
            await aiotasks.guard(task(), name, cancellable=True, logger=orchestration.logger)

    asyncio.run(main())


def test_a_watch_task_that_kopf_gives_up_on_stops_the_operator(
    failures: watchdog.WatchFailures, caplog: pytest.LogCaptureFixture
) -> None:
    # The task name kopf gives a watch (f"watcher for {resource}@{namespace}"), logged capitalized.
    _guarded("watcher for gemmatrainings.v1alpha1.gemma.ai@None", RuntimeError("404 page not found"))
    what = "gemmatrainings.v1alpha1.gemma.ai@none"
    assert failures.stop.is_set()
    assert failures.failed == [what]
    assert f"the watch of {what} failed" in caplog.text


def test_other_tasks_and_other_failures_leave_the_operator_running(
    failures: watchdog.WatchFailures,
) -> None:
    _guarded("watcher for gemmaservers.v1alpha1.gemma.ai@None", None)  # finished: only a warning
    _guarded("peering keep-alive for gemmaservers", RuntimeError("boom"))
    assert not failures.stop.is_set()
    assert failures.failed == []


def test_kopfs_retries_of_one_request_never_run_out() -> None:
    backoffs = EndlessBackoffs(ramp=(1, 2), cap=20)
    # kopf counts a last attempt only for a sized sequence; it iterates the setting once per request.
    assert not isinstance(backoffs, Sized)
    assert list(itertools.islice(backoffs, 5)) == [1, 2, 20, 20, 20]
    assert list(itertools.islice(backoffs, 3)) == [1, 2, 20]
    assert sum(itertools.islice(EndlessBackoffs(), 40)) > 600  # past a 10-minute outage, still retrying
