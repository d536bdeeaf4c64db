"""CEL validation rules for the CRD, built from the accelerator table so the API server and the
operator agree on what is valid. Each rule names the field it is about (``fieldPath``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from pydantic.config import JsonDict

from gemma_runtime.accelerators import GPUS, TPUS, TpuSlice


def rule(
    expression: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": expression, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def extra(rules: list[dict[str, Any]]) -> JsonDict:
    """``json_schema_extra`` carrying CEL rules into the generated CRD."""
    return cast(JsonDict, {"x-kubernetes-validations": rules})


def cel_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


TPU_TYPES = cel_list(list(TPUS))
GPU_TYPES = cel_list(list(GPUS))


def slice_matches(predicate: Callable[[TpuSlice], bool], acc: str = "self") -> str:
    """CEL that is true when the accelerator at ``acc`` resolves to a TPU slice matching ``predicate``.

    Written without string(int) conversions, whose size the API server's cost estimator cannot bound.
    """
    terms = []
    for generation in TPUS.values():
        groups: dict[tuple[tuple[int, ...], bool], list[str]] = {}
        for topology in generation.topologies:
            shapes = [s for s in generation.slices if s.topology == topology]
            allowed = tuple(sorted(s.chips_per_host for s in shapes if predicate(s)))
            if allowed:
                groups.setdefault((allowed, predicate(shapes[0])), []).append(topology)
        for (allowed, by_default), topologies in groups.items():
            counts = ", ".join(str(c) for c in allowed)
            default = "true" if by_default else "false"
            terms.append(
                f"({acc}.type == '{generation.name}' && {acc}.topology in {cel_list(topologies)} && "
                f"(has({acc}.chipsPerHost) ? {acc}.chipsPerHost in [{counts}] : {default}))"
            )
    return "(" + " || ".join(terms) + ")"


def accelerator_rules() -> list[dict[str, Any]]:
    rules = [
        rule(
            f"!(self.type in {TPU_TYPES}) || has(self.topology)",
            "topology is required for TPU types (e.g. 2x4 for v5e)",
            ".topology",
        ),
        rule(
            f"self.type in {TPU_TYPES} || !has(self.topology)",
            "topology applies only to TPU types (v5e, v5p, v6e)",
            ".topology",
        ),
        rule(
            f"self.type in {TPU_TYPES} || !has(self.chipsPerHost)",
            "chipsPerHost applies only to TPU types",
            ".chipsPerHost",
        ),
        rule(f"!(self.type in {GPU_TYPES}) || has(self.count)", "count is required for GPU types", ".count"),
        rule(f"self.type in {GPU_TYPES} || !has(self.count)", "count applies only to GPU types", ".count"),
        rule(
            "!(has(self.spot) && self.spot && has(self.reservation))",
            "spot and reservation are exclusive: Spot capacity cannot come from a reservation",
            ".reservation",
        ),
    ]
    for generation in TPUS.values():
        rules.append(
            rule(
                f"self.type != '{generation.name}' || !has(self.topology) || "
                f"self.topology in {cel_list(generation.topologies)}",
                f"topology is not valid for TPU {generation.name}; valid: {', '.join(generation.topologies)}",
                ".topology",
            )
        )
    rules.append(
        rule(
            f"!has(self.chipsPerHost) || !has(self.topology) || {slice_matches(lambda _: True)}",
            "chipsPerHost is not valid for this topology (only 2x4 on v5e/v6e has a choice: 8 or 4)",
            ".chipsPerHost",
        )
    )
    for gpu in GPUS.values():
        counts = ", ".join(str(c) for c in gpu.counts)
        rules.append(
            rule(
                f"self.type != '{gpu.name}' || !has(self.count) || self.count in [{counts}]",
                f"count is not valid for {gpu.name}; valid: {counts}",
                ".count",
            )
        )
    return rules


def single_host_server_rule() -> dict[str, Any]:
    return rule(
        # Invalid topologies are reported by the accelerator's own rules; only judge valid ones here.
        f"!(self.accelerator.type in {TPU_TYPES}) || !has(self.accelerator.topology) || "
        f"!{slice_matches(lambda _: True, 'self.accelerator')} || "
        f"{slice_matches(lambda s: s.hosts == 1, 'self.accelerator')}",
        "a GemmaServer replica runs on one host: use a single-host topology "
        "(v5e/v6e 1x1, 2x2, 2x4 with 8 chips per host; v5p 2x2x1)",
        ".accelerator.topology",
    )


def cpu_hosts_rule() -> dict[str, Any]:
    return rule(
        "self.type == 'cpu' || !has(self.hosts)",
        "hosts applies only to cpu: a TPU slice's hosts follow from its topology",
        ".hosts",
    )


def multislice_rule() -> dict[str, Any]:
    return rule(
        f"self.numSlices == 1 || (has(self.topology) && {slice_matches(lambda s: s.hosts > 1)})",
        "numSlices > 1 needs a multi-host TPU slice (e.g. v5e 4x4, v5p 2x2x2)",
        ".numSlices",
    )


def _chips(acc: str) -> str:
    dims = f"{acc}.topology.split('x')"
    tpu = f"int({dims}[0]) * int({dims}[1]) * (size({dims}) > 2 ? int({dims}[2]) : 1)"
    return f"({acc}.type in {GPU_TYPES} ? {acc}.count : {tpu}) * {acc}.numSlices"


def mesh_rule() -> dict[str, Any]:
    acc, mesh = "self.accelerator", "self.parallelism"
    axes = [f"{mesh}.{a}" for a in ("data", "fsdp", "tensor", "expert")]
    product = " * ".join(f"({a} == -1 ? 1 : {a})" for a in axes)
    fill = " || ".join(f"{a} == -1" for a in axes)
    total = _chips(acc)
    zero = " || ".join(f"{a} == 0" for a in axes)  # reported by the axis's own rule
    return rule(
        f"{acc}.type == 'cpu' || ({acc}.type in {TPU_TYPES} && !has({acc}.topology)) || "
        f"({acc}.type in {GPU_TYPES} && !has({acc}.count)) || {zero} || "
        f"({total} % ({product}) == 0 && ({fill} || {product} == {total}))",
        "data * fsdp * tensor * expert must equal the chips of the slice * numSlices "
        "(or divide it when one axis is -1, which fills the rest)",
        ".parallelism",
    )


IMMUTABLE = rule("self == oldSelf", "is immutable once created: create a new resource to change it")
