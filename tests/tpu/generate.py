"""Compile every stale or missing cell of ``cells.py`` and write ``serving-figures.json``.

Run as ``python -m tests.tpu.generate [--workers N]`` (``make tpu-figures``). A cell whose fingerprint and
layout are unchanged keeps its figures; the file is written after each compile, so an interrupted run
keeps what it finished. Each compile takes a few minutes on one core (the 256k-vocabulary sampling sorts);
``--workers`` compiles side by side (a gigabyte or two of memory each).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import threading
import time
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tests.tpu import cells

GIB = 1 << 30


def _write(document: dict[str, Any]) -> None:
    ordered = {key: document["cells"][key] for key in sorted(document["cells"])}
    cells.FIGURES.write_text(
        json.dumps({"versions": document["versions"], "cells": ordered}, indent=1) + "\n"
    )


def stale(document: dict[str, Any]) -> list[tuple[cells.Cell, str]]:
    """The cells whose committed figures are not of today's program (with today's fingerprint)."""
    out = []
    for cell in cells.cells():
        plan = cell.plan()
        record = document["cells"].get(cell.key)
        fingerprint = cells.fingerprint(cell)
        current = record is not None and (record["fingerprint"], record["mesh"], record["slots"]) == (
            fingerprint,
            str(plan.mesh),
            plan.slots,
        )
        if not current:
            out.append((cell, fingerprint))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", help="compile only cells whose key contains this text")
    args = parser.parse_args()
    from gemma_runtime.plan import serving
    from gemma_runtime.plan.compiled import compile_one

    document = cells.load()
    if document["versions"] != cells.versions():
        document = {"versions": cells.versions(), "cells": {}}  # another compiler: every figure is stale
    todo = [(c, f) for c, f in stale(document) if not args.only or args.only in c.key]
    print(f"{len(todo)} of {len(cells.cells())} cells to compile", flush=True)
    lock = threading.Lock()
    started = time.monotonic()

    def one(item: tuple[cells.Cell, str]) -> None:
        cell, fingerprint = item
        plan = cell.plan()
        lowered = serving.lower(cells.serving_step(cell), cells.devices(cell), cells.STEPS)
        programs = [compile_one(name, program) for name, program in lowered]
        record = {
            "mesh": str(plan.mesh),
            "slots": plan.slots,
            "fingerprint": fingerprint,
            "total_bytes": max(p.total_bytes for p in programs),
            "fits": all(p.fits for p in programs),
            "programs": {p.name: p.to_dict() for p in programs},
        }
        with lock:
            document["cells"][cell.key] = record
            _write(document)
        total = record["total_bytes"] / GIB
        seconds = sum(p.compile_seconds for p in programs)
        print(
            f"{cell.key}: {plan.slots} slots on {plan.mesh}, compiler {total:.2f} GiB "
            f"({'fits' if record['fits'] else 'does not fit'}), model {plan.total_bytes / GIB:.2f} GiB, "
            f"{seconds:.0f} s (at {time.monotonic() - started:.0f} s)",
            flush=True,
        )

    with concurrent.futures.ThreadPoolExecutor(max(1, args.workers)) as pool:
        list(pool.map(one, todo))
    _write(document)


if __name__ == "__main__":
    main()
