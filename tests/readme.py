"""The README's shell commands, for the doc tests.

Every command in a fenced ``bash`` block (continuation lines joined, comments dropped) must be run
literally by a doc test (``RUN``) or be covered elsewhere for a stated reason (``ELSEWHERE``);
``tests/unit/test_readme.py`` holds that, and the doc tests fetch the exact text with :func:`find`, so a
README edit that changes a command changes what runs."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# Command prefix -> where it runs literally.
RUN = {
    "export REGISTRY=": "tests/cluster/operator/test_readme.py",
    "helm install gemma-operator charts/gemma-operator": "tests/cluster/operator/test_readme.py",
    "kubectl create secret generic hf-token": "tests/cluster/operator/test_readme.py",
    "kubectl apply -f manifests/gemma-server.yaml": "tests/cluster/operator/test_readme.py",
    "kubectl wait gemmaserver/gemma2-9b-it": "tests/cluster/operator/test_readme.py",
    "kubectl apply -f crds/": "tests/cluster/operator/test_readme.py",
    "kubectl get gemma": "tests/cluster/operator/test_readme.py",
    "kubectl explain gemmaserver.spec.accelerator": "tests/cluster/operator/test_readme.py",
    "gemma-operator render -f manifests/gemma-server.yaml": "tests/unit/test_readme.py",
    "gemma-runtime serve --variant tiny": "tests/runtime/test_readme.py",
    "curl -s localhost:8000/v1/completions": "tests/runtime/test_readme.py",
    "gemma-runtime train --variant tiny": "tests/runtime/test_readme.py",
    "gemma-runtime plan --variant gemma2-9b": "tests/tpu/test_readme.py",
    "gemma-runtime plan --variant gemma4-26b-a4b": "tests/tpu/test_readme.py",
    "make test": ".ci/run",
    "make demo": ".ci/run",
}

# Command prefix -> (the test that covers it, why it does not run literally).
ELSEWHERE = {
    "kubectl port-forward service/gemma2-9b-it": (
        "tests/e2e/test_kind.py",
        "needs a kubelet: the kind tier port-forwards to the tiny server's Service",
    ),
    "curl -s localhost:8000/v1/chat/completions": (
        "tests/runtime/serve/test_openai_client.py",
        "needs the forwarded TPU server: the runtime tier chats with a real server",
    ),
    "gemma-runtime plan --train --variant gemma2-9b": (
        "tests/tpu/test_plans.py",
        "eleven minutes of compiles on two cores: the tpu tier plans training for v5e 4x4 on the tiny preset",
    ),
    "gemma-operator run": (
        "tests/cluster/operator/conftest.py",
        "the cluster tier runs the operator process",
    ),
    "gemma-runtime convert": (
        "tests/runtime/test_parity_hf.py",
        "needs a real checkpoint: the parity tier converts one transformers writes",
    ),
    "gemma-runtime serve --checkpoint": (
        "tests/runtime/serve/test_command.py",
        "needs a real checkpoint: flags are parsed into the same config",
    ),
    "gemma-runtime train --config": (
        "tests/cluster/operator/test_training.py",
        "the cluster tier runs it on the operator's rendered config",
    ),
    "gemma-runtime train --checkpoint": (
        "tests/runtime/train/test_loop.py",
        "needs a real checkpoint: the runtime tier fine-tunes an exported one with LoRA",
    ),
    "kubectl apply -f manifests/install.yaml": (
        "tests/cluster/chart/test_install.py",
        "installs into gemma-system like the quickstart's helm install: the chart tier applies it",
    ),
    "make docker-build": (
        "tests/pods/conftest.py",
        "the real-pod tier builds both images the same way (tests.cluster.harness.images), for its own tags",
    ),
    "make kind-create": ("tests/e2e/test_kind.py", "needs Docker: the kind tier creates a cluster"),
    "make kind-demo": ("tests/e2e/test_kind.py", "needs Docker: the kind tier runs the same steps"),
}


@dataclasses.dataclass(frozen=True)
class Command:
    section: str
    text: str


def _strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a # outside quotes, at the start or after a space)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(text: str | None = None) -> list[Command]:
    """Every command in the README's ``bash`` blocks, in order."""
    text = README.read_text() if text is None else text
    found: list[Command] = []
    section = ""
    in_block = False
    pending = ""
    for line in text.splitlines():
        if not in_block and line.startswith("#"):
            section = line.lstrip("#").strip()
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
            continue
        if not in_block:
            continue
        body = _strip_comment(line)
        if body.endswith("\\"):
            pending += body[:-1].rstrip() + " "
            continue
        joined = (pending + body.strip()).strip()
        pending = ""
        if joined:
            found.append(Command(section, re.sub(r"\s+", " ", joined)))
    return found


def find(prefix: str) -> str:
    """The one README command that starts with ``prefix``."""
    matches = {c.text for c in commands() if c.text.startswith(prefix)}
    if len(matches) != 1:
        raise AssertionError(f"README: {len(matches)} commands start with {prefix!r}, expected 1")
    return matches.pop()


def yaml_documents(marker: str) -> list[dict[str, Any]]:
    """The documents of the one ``yaml`` block of the README whose text contains ``marker``."""
    blocks = re.findall(r"^( *)```yaml\n(.*?)^\1```", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    texts = [textwrap.dedent(body) for indent, body in blocks if marker in body]
    if len(texts) != 1:
        raise AssertionError(f"README: {len(texts)} yaml blocks contain {marker!r}, expected 1")
    return [doc for doc in yaml.safe_load_all(texts[0]) if doc]


def run(command: str, env: Mapping[str, str] | None = None, timeout: float = 240, check: bool = True) -> str:
    """``command`` with bash in the repository, this environment's ``gemma-*`` commands first on PATH
    and ``env`` added (a PATH there goes after them); its stdout. ``check``: fail on a non-zero exit."""
    merged = {**os.environ, **(env or {})}
    merged["PATH"] = f"{Path(sys.executable).parent}:{merged['PATH']}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=REPO,
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert not check or result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
    return result.stdout
