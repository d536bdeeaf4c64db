"""JAX's persistent compilation cache: compiled XLA programs kept in a folder, so a restarted pod or a new
replica loads its step programs instead of compiling them again (minutes for a large model on a slice).

JAX keys every entry by the program itself, the compile options, the jax, jaxlib and XLA versions and the
devices it was compiled for (platform, device kind, topology), so one folder can be shared by every
model, accelerator and runtime version without a wrong hit: a change of any of them is a miss. The
operator puts the folder on the model cache volume (a claim, kept across pods and shared by replicas,
or the pod's emptyDir, kept across container restarts).

:data:`USE` counts this process's hits and misses through ``jax.monitoring``, so the start-up log line
and ``/metrics`` tell what a start reused.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HIT = "/jax/compilation_cache/cache_hits"
MISS = "/jax/compilation_cache/cache_misses"


@dataclasses.dataclass
class CacheUse:
    """Programs this process loaded from the cache (hits) or compiled and wrote to it (misses)."""

    directory: str | None = None
    hits: int = 0
    misses: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def record(self, event: str, **_: Any) -> None:
        if event in (HIT, MISS):
            with self._lock:
                if event == HIT:
                    self.hits += 1
                else:
                    self.misses += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.hits, self.misses

    def summary(self, since: tuple[int, int] = (0, 0)) -> str:
        """What the compiles since ``since`` (a snapshot) took from the cache, for a log line."""
        if self.directory is None:
            return "no persistent compilation cache"
        hits, misses = self.snapshot()
        hits, misses = hits - since[0], misses - since[1]
        return f"{hits} of {hits + misses} programs from the persistent compilation cache {self.directory}"


USE = CacheUse()
_LISTENING: list[bool] = []  # one listener per process, however often enable is called


def enable(directory: str | None) -> CacheUse:
    """Keep compiled programs in ``directory`` (created if missing); None leaves the cache off. A folder
    that cannot be created or written is logged and skipped: a start never fails for want of a cache."""
    import jax

    if not _LISTENING:
        jax.monitoring.register_event_listener(USE.record)
        _LISTENING.append(True)
    if directory is None:
        return USE
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        probe = Path(directory) / ".gemma-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        log.warning("compilation cache: cannot write %s (%s); compiling without it", directory, err)
        return USE
    jax.config.update("jax_compilation_cache_dir", directory)
    # Every program, however quick: what compiles in a second on a CPU takes minutes on a TPU slice.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    USE.directory = directory
    log.info("compilation cache: %s", directory)
    return USE
