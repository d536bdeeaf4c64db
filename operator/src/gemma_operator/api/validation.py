"""Parse a resource (a dict from the API server or a file) into its model, or explain what is wrong.

The operator re-validates what admission already checked, because a CRD may be old or edited by hand;
a failure here becomes a condition and an Event naming the field, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gemma_operator.api.base import FieldError
from gemma_operator.api.v1alpha1 import API_VERSION, GemmaServer, GemmaTraining

MODELS: dict[str, type[GemmaServer] | type[GemmaTraining]] = {
    "GemmaServer": GemmaServer,
    "GemmaTraining": GemmaTraining,
}


class SpecError(ValueError):
    """A resource failed validation; ``problems`` holds one ``field: message`` line per error."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.kind, self.name, self.problems = kind, name, problems
        super().__init__(f"invalid {kind} {name!r}: " + "; ".join(problems))


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        loc = tuple(item["loc"])
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc += tuple(cause.field.split("."))
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] in ("literal_error", "enum") and "expected" in item.get("ctx", {}):
            message = f"unsupported value {item.get('input')!r}; valid: {item['ctx']['expected']}"
        problems.append(f"{field_path(loc)}: {message}")
    return problems


def parse(obj: Mapping[str, Any]) -> GemmaServer | GemmaTraining:
    """Validate a GemmaServer or GemmaTraining given as a dict; raise SpecError naming each bad field."""
    kind = str(obj.get("kind", ""))
    name = str(obj.get("metadata", {}).get("name", ""))
    if obj.get("apiVersion") != API_VERSION or kind not in MODELS:
        raise SpecError(
            kind or "object", name, [f"apiVersion/kind: expected {API_VERSION} GemmaServer or GemmaTraining"]
        )
    try:
        return MODELS[kind].model_validate(dict(obj))
    except ValidationError as err:
        raise SpecError(kind, name, describe(err)) from err
