"""Templates are YAML skeletons; every value enters through ``tojson`` (JSON is YAML), so a name or an
environment value can never add keys or change the structure. Undefined variables are errors."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jinja2
import yaml

# What YAML reads raw inside a quoted scalar: printable characters that are not line breaks (YAML 1.1
# folds NEL, U+2028 and U+2029 like a newline). Everything else goes in as a \u escape.
_NOT_RAW = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _dumps(value: Any, **kwargs: Any) -> str:
    """JSON for a YAML template. Not ASCII-only: JSON writes a character beyond U+FFFF as a surrogate pair
    (\\ud83d\\ude80), which YAML reads as two lone surrogates instead of the character."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return _NOT_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gemma_operator.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.policies["json.dumps_function"] = _dumps
    return env


class RenderError(RuntimeError):
    """A template produced something that is not one Kubernetes object (a bug, never user input)."""


def render(template: str, **values: Any) -> dict[str, Any]:
    text = _environment().get_template(template).render(**values)
    obj = yaml.safe_load(text)
    if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= obj.keys():
        raise RenderError(f"{template} did not render one Kubernetes object")
    return obj
