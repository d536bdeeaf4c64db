"""The helm binary of the cluster tier, run with its own cache and config folders (never the user's)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.packaging.generate import CHART, NAMESPACE, RELEASE


class Helm:
    def __init__(self, binary: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.home = home
        self.kubeconfig = kubeconfig

    def run(self, *args: str, timeout: float = 180) -> str:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def template(self, *values: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        """The chart rendered with ``--set`` ``values``, as objects (CRDs not included)."""
        args = [arg for value in values for arg in ("--set", value)]
        text = self.run("template", RELEASE, str(CHART), "--namespace", namespace, *args)
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def status(self, namespace: str = NAMESPACE) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run("status", RELEASE, "-n", namespace, "-o", "json"))
        return out


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``) among ``objects``."""
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, (
        f"{len(matches)} {kind} named {name}: {[o['metadata']['name'] for o in matches]}"
    )
    return matches[0]
