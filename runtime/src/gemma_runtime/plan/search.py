"""The largest size (slots per data shard, rows per device) whose program still fits, found by compiling.

Bytes grow about linearly with the size, so two compiled points predict the boundary; every guess is
compiled, and the answer is a size that fits whose next size does not (or the limit). A program that does
not fit still tells its size: the compiler's message names the bytes it needed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from gemma_runtime.plan.compiled import Program


@dataclasses.dataclass(frozen=True)
class Largest:
    size: int | None  # None: not even the smallest size fits
    compiled: dict[int, Program]  # every size compiled on the way
    limit: int

    @property
    def proven(self) -> bool:
        """Whether the next size was compiled and did not fit (or the answer is the limit)."""
        if self.size is None:
            return 1 in self.compiled
        return self.size == self.limit or (
            self.size + 1 in self.compiled and not self.compiled[self.size + 1].fits
        )


def largest_fitting(
    compile_at: Callable[[int], Program],
    start: int,
    usable: int,
    limit: int,
    *,
    slope: float | None = None,
    tries: int = 6,
) -> Largest:
    """Search 1..``limit`` from ``start`` with at most ``tries`` compiles; ``slope``: an estimate of the
    bytes per unit of size for the first guess (else the size doubles or halves)."""
    seen: dict[int, Program] = {}
    fit, miss = 0, limit + 1  # largest size known to fit, smallest known not to
    size = max(1, min(start, limit))
    for _ in range(tries):
        if size not in seen:
            seen[size] = compile_at(size)
        if seen[size].fits:
            fit = max(fit, size)
        else:
            miss = min(miss, size)
        if miss == fit + 1 or fit == limit:
            break
        size = _guess(seen, fit, miss, usable, slope)
    return Largest(fit or None, seen, limit)


def _guess(seen: dict[int, Program], fit: int, miss: int, usable: int, prior: float | None) -> int:
    """The next size to compile: where a line through the measured sizes nearest the boundary (or through
    one size with the ``prior`` slope) meets ``usable``, strictly between what fits and what does not."""
    low, high = fit + 1, miss - 1
    measured = [(s, p.peak_bytes) for s, p in seen.items() if p.peak_bytes]
    anchor = fit or min(seen)
    measured.sort(key=lambda m: abs(m[0] - anchor))
    slope = prior
    if len(measured) >= 2:
        (s0, b0), (s1, b1) = measured[:2]
        slope = (b1 - b0) / (s1 - s0)
    if measured and slope and slope > 0:
        s0, b0 = measured[0]
        return max(low, min(high, s0 + math.floor((usable - b0) / slope)))
    if not fit:  # nothing fits yet: halve towards 1
        return max(1, min(high, min(seen) // 2))
    return max(low, min(high, fit * 2))
