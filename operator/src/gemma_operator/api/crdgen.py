"""Pydantic models -> structural CustomResourceDefinitions.

The API server needs a structural schema: every node typed, no ``$ref``, no ``type: null``, no
``additionalProperties: false`` beside ``properties``. This module rewrites pydantic's JSON schema
into that form, keeping every ``description`` (for ``kubectl explain``), bound and CEL rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gemma_operator.api.v1alpha1 import CATEGORY, GROUP, KINDS, NAME_MESSAGE, NAME_RULE, VERSION, KindInfo

_DROP = {"title", "$defs", "discriminator"}
RULES = "x-kubernetes-validations"
_DEFAULTABLE = "x-gemma-defaultable"  # internal marker, removed before output


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` (siblings such as a field's description win over the definition's)."""
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].split("/")[-1]], defs)
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        rules = [*target.get(RULES, []), *node.get(RULES, [])]  # the type's rules and the field's
        if rules:
            merged[RULES] = rules
        return merged
    if "allOf" in node and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return {**_resolve(node["allOf"][0], defs), **rest}
    return node


def _any_of(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Optional fields lose their null branch; ``int | str`` becomes a Kubernetes int-or-string."""
    branches = [_resolve(b, defs) for b in node["anyOf"] if b.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(branches) == 1:
        return structural({**branches[0], **rest}, defs)
    if {b.get("type") for b in branches} == {"integer", "string"}:  # a Kubernetes quantity
        pattern = next((b["pattern"] for b in branches if "pattern" in b), None)
        quantity = {
            **{k: v for k, v in rest.items() if k not in _DROP},  # an optional quantity nests its anyOf
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
        }
        return _ordered({**quantity, **({"pattern": pattern} if pattern else {})})
    raise ValueError(f"cannot express anyOf {branches} structurally")


def _keyword(key: str, value: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema keyword rewritten for a structural schema (possibly into several, or none)."""
    if key in _DROP or (key == "additionalProperties" and not isinstance(value, dict)):
        # `additionalProperties: false` is implied: a structural schema prunes unknown fields.
        return {}
    if key == "const":
        return {"enum": [value]}
    if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
        return {"minimum" if key == "exclusiveMinimum" else "maximum": value, key: True}
    if key == "properties":
        # Optional fields carry `default: None` in pydantic's schema; sub-objects without any default
        # come from a default_factory and default to their fields' defaults, which show on read back.
        return {
            key: {name: structural(prop, defs) for name, prop in value.items()},
            _DEFAULTABLE: [n for n, p in value.items() if "default" not in _resolve(p, defs)],
        }
    if key in ("items", "additionalProperties"):
        return {key: structural(value, defs)}
    return {key: value}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        return _any_of(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_keyword(key, value, defs))
    if "enum" in out:
        out.setdefault("type", "string")
        if out["type"] == "string":
            # Bounds CEL's cost estimate; generous, so a wrong value is reported as unsupported.
            out.setdefault("maxLength", max(64, *(len(v) for v in out["enum"])))
    if "properties" in out:
        out.setdefault("type", "object")
        required = set(out.get("required", []))
        for name in out.pop(_DEFAULTABLE):
            prop = out["properties"][name]
            if name not in required and "properties" in prop:
                # The API server checks a default against CEL rules as written, so spell it out in full.
                prop["default"] = {n: p["default"] for n, p in prop["properties"].items() if "default" in p}
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return _ordered(out)


_FIRST = ("type", "description", "default", "enum", "required")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Type and description first, then the rest alphabetically: stable, readable YAML."""
    head = [k for k in _FIRST if k in node]
    return {k: node[k] for k in [*head, *sorted(k for k in node if k not in _FIRST)]}


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def crd_for(info: KindInfo) -> dict[str, Any]:
    spec = model_schema(info.spec)
    status = model_schema(info.status)
    schema = {
        "type": "object",
        "description": (info.model.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": {**spec, "description": "Desired state."},
            "status": {**status, "description": "Observed state, written by the operator only."},
        },
        "x-kubernetes-validations": [{"rule": NAME_RULE, "message": NAME_MESSAGE}],
    }
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    columns = []
    for column in info.columns:
        entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        if column.description:
            entry["description"] = column.description
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


HEADER = "# Generated by `gemma-operator crds` from gemma_operator.api; do not edit (make verify checks).\n"


def render_crds() -> dict[str, str]:
    """File name -> YAML text for every kind."""
    return {
        f"{GROUP}_{info.plural}.yaml": HEADER + yaml.safe_dump(crd_for(info), sort_keys=False, width=120)
        for info in KINDS
    }


def write_crds(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    from gemma_operator.api.reference import render_reference

    for name, text in [*render_crds().items(), ("REFERENCE.md", render_reference())]:
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written
