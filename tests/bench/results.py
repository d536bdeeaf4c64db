"""Where every benchmark leaves its result: one JSON file under bench/, which `tests.bench.report` reads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def main(module: str, doc: str, default: str, run: Callable[[], dict[str, Any]]) -> None:
    """The command line of a benchmark whose only option is ``--output`` (default ``default``)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n", maxsplit=1)[0])
    parser.add_argument("--output", type=Path, default=Path(default))
    output = parser.parse_args().output
    write(run(), output)
