"""What the kubelet does to a container's env before the process starts, for tests that check what a
runtime would see: downward-API fields read from the pod's metadata, then $(VAR) references expanded
from the entries defined before (Kubernetes' expansion rules: ``$$`` is a literal ``$``, an unknown
reference stays as written)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]|metadata\.(name|namespace)")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, value)


def _field(path: str, metadata: Mapping[str, Any]) -> str:
    match = _FIELD.fullmatch(path)
    if match is None:
        raise ValueError(f"a downward-API field this helper does not resolve: {path}")
    if match.group(3):
        return str(metadata[match.group(3)])
    return str(metadata.get(match.group(1), {})[match.group(2)])


def resolve_env(entries: list[dict[str, Any]], metadata: Mapping[str, Any]) -> dict[str, str]:
    """The environment the container's process gets from ``entries`` in a pod with ``metadata``."""
    env: dict[str, str] = {}
    for entry in entries:
        if "valueFrom" in entry:
            env[entry["name"]] = _field(entry["valueFrom"]["fieldRef"]["fieldPath"], metadata)
        else:
            env[entry["name"]] = expand(entry.get("value", ""), env)
    return env
