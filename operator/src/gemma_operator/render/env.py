"""Templates are YAML skeletons; every value enters through ``tojson`` (JSON is YAML), so a name or an
environment value can never add keys or change the structure. Undefined variables are errors."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2
import yaml


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gemma_operator.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


class RenderError(RuntimeError):
    """A template produced something that is not one Kubernetes object (a bug, never user input)."""


def render(template: str, **values: Any) -> dict[str, Any]:
    text = _environment().get_template(template).render(**values)
    obj = yaml.safe_load(text)
    if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= obj.keys():
        raise RenderError(f"{template} did not render one Kubernetes object")
    return obj
