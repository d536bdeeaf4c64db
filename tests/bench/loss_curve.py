"""The training loss curve of the README's command: `gemma-runtime train --variant tiny` on the shipped
sample text for 200 steps, logging every 5; records step, loss and tokens/s from its metrics file.

usage: python -m tests.bench.loss_curve [--output bench/loss.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import results

STEPS = 200


def run(log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        command = [
            *(sys.executable, "-m", "gemma_runtime", "train", "--variant", "tiny"),
            *("--steps", str(STEPS), "--log-every", "5", "--no-progress"),
            *("--output", str(Path(tmp) / "run"), "--metrics-file", str(metrics)),
        ]
        log(f"[loss] {' '.join(command[2:])}")
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    first, last = rows[0], rows[-1]
    log(f"[loss] step {first['step']}: {first['loss']:.2f} -> step {last['step']}: {last['loss']:.2f}")
    return {
        "variant": "tiny",
        "data": "gemma_runtime/data/sample.txt",
        "steps": [r["step"] for r in rows],
        "loss": [r["loss"] for r in rows],
        "tokens_per_second": [r.get("tokens_per_second") for r in rows],
    }


if __name__ == "__main__":
    results.main("tests.bench.loss_curve", __doc__, "bench/loss.json", run)
