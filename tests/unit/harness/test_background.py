"""The background build of the Go parts (``parts.Background``): its lines are held until ``wait`` prints
them, and ``stop`` ends every process it started, children included, as a test session's end does when
no test waited for it."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cluster.harness.parts import Background


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (an exited one may linger as a zombie of PID 1)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


def test_wait_prints_the_lines_in_order_once_the_build_ends() -> None:
    build = Background(["bash", "-c", "echo one >&2; sleep 0.2; echo two >&2"])
    printed: list[str] = []
    build.wait(printed.append)
    assert printed[0].startswith("[cluster-binaries] the build started")
    assert printed[1:] == ["one", "two"]
    build.wait(printed.append)  # once only
    assert len(printed) == 3


def test_stop_ends_the_build_and_the_processes_it_started() -> None:
    build = Background(["bash", "-c", "sleep 300 & sleep 300"])
    pgid = build._process.pid
    time.sleep(0.3)
    assert _group_alive(pgid)
    started = time.monotonic()
    build.stop()
    assert time.monotonic() - started < 15
    assert not _group_alive(pgid)  # the background sleep too, not only the shell
