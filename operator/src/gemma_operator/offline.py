"""`gemma-operator render`: the children of resources in a file, from the same pure code the operator
runs, for GitOps reviews and debugging. Owner references carry a placeholder uid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gemma_operator.api.v1alpha1 import GemmaServer, GemmaTraining
from gemma_operator.api.validation import SpecError, parse
from gemma_operator.config import Settings
from gemma_operator.render.gateway import render_inference_pool
from gemma_operator.render.plan import DoesNotFitError
from gemma_operator.render.serving import render_server
from gemma_operator.render.training import render_workload

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the runtime config inside a ConfigMap) as readable ``|`` blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


def render_objects(doc: dict[str, Any], namespace: str, settings: Settings) -> list[dict[str, Any]]:
    doc = {**doc, "metadata": {"uid": PLACEHOLDER_UID, "namespace": namespace, **doc.get("metadata", {})}}
    model = parse(doc)
    if isinstance(model, GemmaServer):
        # The InferencePool too: the operator applies it where its CRD is installed.
        pool = render_inference_pool(doc, model.spec, settings)
        return render_server(doc, model, settings) + ([pool] if pool is not None else [])
    assert isinstance(model, GemmaTraining)
    return render_workload(doc, model, settings, attempt=0)


def render_file(
    path: Path, namespace: str = "default", settings: Settings | None = None
) -> tuple[str, list[str]]:
    """YAML of every child of every resource in ``path``, and the problems found."""
    settings = settings or Settings()
    out: list[str] = []
    problems: list[str] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        try:
            children = render_objects(doc, namespace, settings)
        except (SpecError, DoesNotFitError) as err:
            problems.append(str(err))
            continue
        name = doc.get("metadata", {}).get("name", "")
        out += [f"# {doc['kind']} {name}: {child['kind']}\n" + dump(child) for child in children]
    return "---\n".join(out), problems
