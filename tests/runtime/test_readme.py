"""The README's runtime commands, run as written (a free port instead of 8000, a temporary folder
instead of /tmp/run, and fewer training steps): `gemma-runtime serve --variant tiny` answers the README's
curl with a completion, and `gemma-runtime train --variant tiny` trains, logs and exports the model."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests import readme
from tests.runtime.serve.helpers import free_port, wait_ready

BIN = Path(sys.executable).parent
CPU = {"JAX_PLATFORMS": "cpu"}


def test_serve_tiny_answers_the_readme_curl(tmp_path: Path) -> None:
    port = free_port()
    serve = readme.find("gemma-runtime serve --variant tiny")
    assert "--host 127.0.0.1 --port 8000" in serve
    argv = shlex.split(serve.replace("--port 8000", f"--port {port}"))
    argv[0] = str(BIN / argv[0])
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(argv, env={**os.environ, **CPU}, stdout=log, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, (tmp_path / "serve.log").read_text, timeout=180)
        curl = readme.find("curl -s localhost:8000/v1/completions").replace(
            "localhost:8000", f"127.0.0.1:{port}"
        )
        answer = json.loads(readme.run(curl, CPU, timeout=120))
        assert answer["object"] == "text_completion"
        assert answer["usage"]["completion_tokens"] == 16
        assert isinstance(answer["choices"][0]["text"], str)
    finally:
        process.terminate()
        assert process.wait(60) == 0
        log.close()


def test_train_tiny_trains_logs_and_exports(tmp_path: Path) -> None:
    train = readme.find("gemma-runtime train --variant tiny")
    assert "--steps 200" in train
    assert "/tmp/run" in train
    out = tmp_path / "run"
    readme.run(train.replace("--steps 200", "--steps 12").replace("/tmp/run", str(out)), CPU, timeout=600)
    logged = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 12
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert (out / "model").is_dir()
