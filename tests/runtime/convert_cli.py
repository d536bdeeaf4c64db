"""`gemma-runtime convert` run as a user runs it (the installed script, a child process), for the parity
tests: the checkpoint it writes must be our format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gemma_runtime.checkpoint import Format, detect, load_model
from gemma_runtime.model import Transformer


def convert(checkpoint: Path, output: Path) -> Transformer:
    """Convert ``checkpoint`` into ``output`` with the CLI and load what it wrote."""
    script = Path(sys.executable).with_name("gemma-runtime")
    done = subprocess.run(
        [str(script), "convert", str(checkpoint), "-o", str(output)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    assert detect(output) == Format.OURS
    return load_model(output)
