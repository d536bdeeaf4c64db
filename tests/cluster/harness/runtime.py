"""Run the real `gemma-runtime` for a pod of the local control plane: kwok pods run no containers, so the
demo (and tests) start the runtime on the pod's loopback IP with the config the operator rendered into
the pod's ConfigMap, changing only what a laptop cannot have (image paths, a checkpoint folder). When
the process ends, ``end_pod`` does the kubelet's part: the pod ends with the process's exit code and
its termination message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import yaml

from tests.cluster.harness.control_plane import LocalCluster


def rendered_config(cluster: LocalCluster, label: str, namespace: str = "default") -> dict[str, Any]:
    """The runtime.yaml of the ConfigMap labelled ``label`` (e.g. gemma.ai/server=tiny)."""
    items = json.loads(cluster.kubectl("-n", namespace, "get", "configmaps", "-l", label, "-o", "json"))[
        "items"
    ]
    if len(items) != 1:
        raise RuntimeError(f"expected one ConfigMap labelled {label}, found {len(items)}")
    config: dict[str, Any] = yaml.safe_load(items[0]["data"]["runtime.yaml"])
    return config


class RuntimeProcess:
    """`gemma-runtime <command> --config FILE` in its own session, logging to a file; ``stop`` sends
    SIGTERM (the runtime's graceful path) and kills after a grace period."""

    def __init__(self, command: str, config: dict[str, Any], log_dir: Path | None = None) -> None:
        self.config = config
        self._dir = Path(tempfile.mkdtemp(prefix=f"gemma-{command}-", dir=log_dir))
        self.config_path = self._dir / "runtime.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = self._dir / f"{command}.log"
        self.message = self._dir / "termination-log"  # the container's /dev/termination-log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
        self._log_file: IO[bytes] = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gemma_runtime", command, "--config", str(self.config_path)]
            + (["--no-progress", "--message-file", str(self.message)] if command == "train" else []),
            env={**env, "JAX_PLATFORMS": "cpu"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def end_pod(
    cluster: LocalCluster, namespace: str, pod: str, runtime: RuntimeProcess, timeout: float = 600
) -> int:
    """Wait for ``runtime`` to exit, then end its kwok pod as a kubelet would: Succeeded or Failed with
    the exit code, the runtime's termination message in the container status. Returns the exit code."""
    code = runtime.proc.wait(timeout=timeout)
    message = runtime.message.read_text() if runtime.message.exists() else ""
    ending = "kwok.gemma.ai/succeed-after=0s" if code == 0 else f"kwok.gemma.ai/fail-exit-code={code}"
    cluster.kubectl("-n", namespace, "annotate", "pod", pod, ending, f"kwok.gemma.ai/exit-message={message}")
    return code
