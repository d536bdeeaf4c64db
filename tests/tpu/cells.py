"""The README's "what fits where" cells that XLA's TPU compiler checks, and their compiled figures.

Cells: every preset of the table x {v5e 2x2, v5e 2x4, v6e 2x4, v5p 2x2x1} (one host each, as a GemmaServer
gets) x {bf16, int8 weights}, at the table's 4,096-token sequences and 1,024-token chunks, laid out as the
memory model plans them (its mesh and largest batch; where it says nothing fits, one slot per data shard
on its smallest layout). For each, the engine's two extreme programs are compiled for the host's chips:
decode only, and decode with the largest chunk (one or the other holds the most; the buckets between hold
less than the largest chunk).

A compile takes minutes on a small machine (the sampling sorts a 256k vocabulary), so the figures are
generated once and committed (``serving-figures.json``, ``make tpu-figures``), like the README's tables.
Each carries a fingerprint of the program it was compiled from: the same step with one period of the
model's attention pattern (1, 2 or 6 layers, everything else equal: the layers repeat), lowered without
debug information, with the jax and libtpu versions. The tpu tier lowers every cell again (seconds) and
fails when a fingerprint changed: then the committed figures are not the compiler's for today's code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from gemma_runtime import memory
from gemma_runtime.variants import preset
from tests.unit.packaging.fits import PREFILL, SEQUENCE, VARIANTS

FIGURES = Path(__file__).with_name("serving-figures.json")
HOSTS = [("v5e", "2x2"), ("v5e", "2x4"), ("v6e", "2x4"), ("v5p", "2x2x1")]
QUANTIZATIONS = ["none", "int8"]
TOLERANCE = 0.10  # the memory model's bytes per chip against the compiler's
# ... or this many bytes, where the total is small: XLA's temporaries for the same program differ by more
# than that between chip generations (gemma2-2b's largest-chunk step on one 2x4 layout: 0.87 GiB of
# temporaries on v5e, 1.46 GiB on v6e), which a model of the program cannot follow.
TOLERANCE_BYTES = 0.6 * (1 << 30)
STEPS = (0, PREFILL)  # the engine's two extreme programs: decode only, and the largest chunk


@dataclasses.dataclass(frozen=True)
class Cell:
    variant: str
    tpu: str
    topology: str
    quantization: str

    @property
    def key(self) -> str:
        return (
            f"{self.variant} {self.tpu} {self.topology} {'int8' if self.quantization == 'int8' else 'bf16'}"
        )

    def plan(self) -> memory.ServingPlan:
        """The memory model's layout and bytes: its plan, or (nothing fits) one slot per data shard on
        the layout that needs the fewest bytes."""
        config, chips = preset(self.variant), memory.host_chips(self.tpu, self.topology)
        limits: dict[str, Any] = {
            "dtype": "bfloat16",
            "quantization": self.quantization,
            "chips": chips,
            "max_len": SEQUENCE,
            "max_prefill": PREFILL,
        }
        try:
            return memory.plan_serving(config, **limits)
        except memory.PlanError:
            candidates = memory.candidate_meshes(config, chips.count)
            plans = [memory.serving_bytes(config, slots=m.data, mesh=m, **limits) for m in candidates]
            return min(plans, key=lambda p: p.total_bytes)


def cells() -> list[Cell]:
    return [Cell(v, t, topo, q) for v in VARIANTS for t, topo in HOSTS for q in QUANTIZATIONS]


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "libtpu")}


def serving_step(cell: Cell, layers: int | None = None) -> Any:
    from gemma_runtime.plan.serving import ServingStep

    plan = cell.plan()
    config = preset(cell.variant)
    if layers is not None:
        config = config.replace(num_layers=layers)
    return ServingStep(
        config, "bfloat16", cell.quantization, plan.mesh.data, plan.mesh.tensor, plan.slots, SEQUENCE, PREFILL
    )


def devices(cell: Cell) -> list[Any]:
    from gemma_runtime.plan.topology import host_devices, slice_devices

    return host_devices(slice_devices(cell.tpu, cell.topology))


def fingerprint(cell: Cell) -> str:
    """The hash of the cell's steps with one period of the attention pattern, lowered for its host."""
    from gemma_runtime.plan import serving

    period = len(preset(cell.variant).attention_pattern)
    step = serving_step(cell, layers=period)
    text = "".join(
        lowered.as_text(debug_info=False) for _, lowered in serving.lower(step, devices(cell), STEPS)
    )
    target = {**versions(), "tpu": cell.tpu, "topology": cell.topology}
    return hashlib.sha256((json.dumps(target, sort_keys=True) + text).encode()).hexdigest()


def load() -> dict[str, Any]:
    if not FIGURES.exists():
        return {"versions": {}, "cells": {}}
    document: dict[str, Any] = json.loads(FIGURES.read_text())
    return document
