"""Everything generated (``make manifests``; ``make verify`` fails on drift):

- ``charts/gemma-operator/crds/``: copies of ``crds/`` (the one source of truth is the pydantic models);
- the values table in ``charts/gemma-operator/README.md``, from the ``# --`` comment on every key of
  ``values.yaml`` (helm-docs' convention: a described map is one row, an undescribed map is a group whose
  keys must each be described);
- ``manifests/install.yaml``: the chart rendered with default values into ``gemma-system``, for
  ``kubectl apply -f`` and GitOps;
- the README's "what fits where" table, from the memory model (``fits.py``);
- ``manifests/argocd/argocd-cm.yaml``: the Lua health checks as Argo CD's ConfigMap keys, and their test
  data (``tests.unit.packaging.health_cases``).

Run as ``python -m tests.unit.packaging.generate``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.api_cases import REPO
from tests.unit.packaging import fits, health_cases

CHART = REPO / "charts" / "gemma-operator"
INSTALL = REPO / "manifests" / "install.yaml"
ARGOCD_CM = REPO / "manifests" / "argocd" / "argocd-cm.yaml"
RELEASE, NAMESPACE = "gemma-operator", "gemma-system"
TABLE_START, TABLE_END = "<!-- values:start -->", "<!-- values:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")
_DESCRIBED = re.compile(r"^ *# -- ?(?P<text>.*)$")
_COMMENT = re.compile(r"^ *#(?P<text>.*)$")


class UndocumentedKeyError(ValueError):
    """A values.yaml key without a ``# --`` description."""


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def _type(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list")):
        if isinstance(value, kind):
            return name
    return "object"


def values_rows(text: str) -> list[Row]:
    """One row per described key of a values.yaml text, in file order."""
    values = yaml.safe_load(text)
    rows: list[Row] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing maps
    described_at: int | None = None  # indent of a described map whose keys need no description
    pending: list[str] | None = None
    for line in text.splitlines():
        if match := _DESCRIBED.match(line):
            pending = [match["text"].strip()]
            continue
        if match := _COMMENT.match(line):
            if pending is not None and not line.strip().startswith("# --"):
                pending.append(match["text"].strip())
            continue
        match = _KEY.match(line)
        if match is None:
            if not line.strip():
                pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if described_at is not None and indent > described_at:
            continue
        described_at = None
        path = [k for _, k in stack] + [match["key"]]
        value: Any = values
        for part in path:
            value = value[part]
        dotted = ".".join(path)
        if pending is not None:
            rows.append(Row(dotted, _type(value), json.dumps(value), " ".join(pending)))
            described_at = indent if isinstance(value, dict) else None
        elif not isinstance(value, dict):
            raise UndocumentedKeyError(f"values.yaml: {dotted} has no `# --` description")
        pending = None
        stack.append((indent, match["key"]))
    return rows


def values_table(text: str) -> str:
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for row in values_rows(text):
        default, description = (s.replace("|", "\\|") for s in (row.default, row.description))
        lines.append(f"| `{row.key}` | {row.type} | `{default}` | {description} |")
    return "\n".join(lines)


def chart_readme(readme: str, values: str) -> str:
    """``readme`` with the table between the markers replaced by the one ``values`` gives."""
    head, rest = readme.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{values_table(values)}\n{TABLE_END}{tail}"


def helm_binary() -> Path:
    from tests.cluster.harness.binaries import ensure_binaries

    return ensure_binaries() / "helm"


def render_chart(helm: Path, *args: str, namespace: str = NAMESPACE) -> str:
    """``helm template`` of the chart (release gemma-operator) with extra ``args``."""
    return subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def install_yaml(helm: Path) -> str:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            # The operator pod meets the restricted Pod Security Standard; say so, and keep it so.
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    header = (
        "# Generated by `make manifests` from charts/gemma-operator with default values; do not edit.\n"
        "# Install: kubectl apply -f manifests/install.yaml (namespace gemma-system, CRDs, RBAC, operator).\n"
    )
    rendered = render_chart(helm, "--include-crds")
    return header + "---\n" + yaml.safe_dump(namespace, sort_keys=False) + rendered


def argocd_cm() -> str:
    data = {
        f"resource.customizations.health.gemma.ai_{kind}": (
            REPO / "manifests" / "argocd" / "gemma.ai" / kind / "health.lua"
        ).read_text()
        for kind in health_cases.CASES
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
        },
        "data": data,
    }
    header = (
        "# Generated by `make manifests` from manifests/argocd/gemma.ai/*/health.lua; do not edit.\n"
        "# Merge into Argo CD's argocd-cm (e.g. kubectl -n argocd patch configmap argocd-cm "
        "--patch-file manifests/argocd/argocd-cm.yaml).\n"
    )
    return header + yaml.dump(config_map, Dumper=_LiteralDumper, sort_keys=False)


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so the Lua reads as Lua in the ConfigMap."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _literal)


def chart_crds() -> dict[str, str]:
    """File name -> text of the CRDs the chart must carry."""
    return {p.name: p.read_text() for p in sorted((REPO / "crds").glob("*.yaml"))}


def main() -> int:
    target = CHART / "crds"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for name, text in chart_crds().items():
        (target / name).write_text(text)
    readme = CHART / "README.md"
    readme.write_text(chart_readme(readme.read_text(), (CHART / "values.yaml").read_text()))
    (REPO / "README.md").write_text(fits.readme_with_table((REPO / "README.md").read_text()))
    INSTALL.write_text(install_yaml(helm_binary()))
    ARGOCD_CM.write_text(argocd_cm())
    for kind in health_cases.CASES:
        for path, text in health_cases.render(kind).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in (target, readme, INSTALL, ARGOCD_CM):
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
