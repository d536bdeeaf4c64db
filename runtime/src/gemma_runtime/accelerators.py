"""The accelerator table: every TPU slice and GPU machine the API accepts, as data.

Facts from GKE's and Cloud TPU's documentation (see the README's accelerator table). The CRD's CEL rules,
the pydantic validation and the operator's rendering all read this one table.

A TPU slice has ``hosts`` VMs (= Kubernetes nodes = pods) of ``chips_per_host`` chips each. ``2x4`` on v5e
and v6e is ambiguous on GKE: one 8-chip host (``-8t`` machine) or two 4-chip hosts (``-4t``). The API
resolves it explicitly: one 8-chip host unless ``chipsPerHost: 4`` asks for two.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    topology: str
    chips_per_host: int
    machine_type: str

    @property
    def chips(self) -> int:
        return math.prod(int(d) for d in self.topology.split("x"))

    @property
    def hosts(self) -> int:
        return self.chips // self.chips_per_host


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    name: str  # the API's value, e.g. "v5e"
    node_label: str  # cloud.google.com/gke-tpu-accelerator
    hbm_gib: int  # per chip
    peak_bf16_tflops: float  # per chip
    slices: tuple[TpuSlice, ...]
    hbm_gb_per_s: float  # HBM bandwidth per chip, published
    # The most bytes one program may use per chip, as XLA's TPU compiler decides (libtpu 0.0.42.1, found by
    # compiling ever larger programs for the topology, `gemma-runtime plan`): past it, compiling fails
    # with RESOURCE_EXHAUSTED. v6e keeps 0.75 GiB of its 32 for itself, v5e and v5p 0.25 GiB.
    usable_hbm_bytes: int
    # SparseCores per chip (published: v5p 4, v6e 2). libtpu 0.0.42.1 crashes (SIGSEGV in its SparseCore
    # code generator) when two programs that offload to them compile at once in one process, as a mixture
    # of experts' step does: `gemma-runtime plan` compiles one program at a time for these chips.
    sparse_cores: int = 0

    @property
    def topologies(self) -> list[str]:
        return list(dict.fromkeys(s.topology for s in self.slices))

    def single_host_topologies(self) -> list[str]:
        return [s.topology for s in self.slices if s.hosts == 1]


def _lite_slices(prefix: str, names: dict[int, str]) -> tuple[TpuSlice, ...]:
    """v5e and v6e share topologies: 1-, 4- and 8-chip single hosts, else 4-chip hosts."""
    return (
        TpuSlice("1x1", 1, f"{prefix}-{names[1]}"),
        TpuSlice("2x2", 4, f"{prefix}-{names[4]}"),
        TpuSlice("2x4", 8, f"{prefix}-{names[8]}"),  # first: the default for the ambiguous 2x4
        TpuSlice("2x4", 4, f"{prefix}-{names[4]}"),
        *(TpuSlice(t, 4, f"{prefix}-{names[4]}") for t in ("4x4", "4x8", "8x8", "8x16", "16x16")),
    )


TPUS: Final[dict[str, TpuGeneration]] = {
    "v5e": TpuGeneration(
        "v5e",
        "tpu-v5-lite-podslice",
        16,
        197.0,
        _lite_slices("ct5lp", {1: "hightpu-1t", 4: "hightpu-4t", 8: "hightpu-8t"}),
        hbm_gb_per_s=819.0,
        usable_hbm_bytes=16_909_293_568,  # 15.75 GiB
    ),
    "v5p": TpuGeneration(
        "v5p",
        "tpu-v5p-slice",
        95,
        459.0,
        tuple(
            TpuSlice(t, 4, "ct5p-hightpu-4t")
            for t in ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8")
        ),
        hbm_gb_per_s=2765.0,
        usable_hbm_bytes=102_803_379_200,  # 95.74 GiB
        sparse_cores=4,
    ),
    "v6e": TpuGeneration(
        "v6e",
        "tpu-v6e-slice",
        32,
        918.0,
        _lite_slices("ct6e", {1: "standard-1t", 4: "standard-4t", 8: "standard-8t"}),
        hbm_gb_per_s=1640.0,
        usable_hbm_bytes=33_550_186_496,  # 31.25 GiB
        sparse_cores=2,
    ),
}


@dataclasses.dataclass(frozen=True)
class GpuType:
    name: str  # the API's value = GKE's cloud.google.com/gke-accelerator label
    memory_gib: int
    machines: dict[int, str]  # GPUs per node -> machine type

    @property
    def counts(self) -> list[int]:
        return sorted(self.machines)


GPUS: Final[dict[str, GpuType]] = {
    g.name: g
    for g in (
        GpuType(
            "nvidia-l4",
            24,
            {1: "g2-standard-12", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
        ),
        GpuType(
            "nvidia-tesla-a100",
            40,
            {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g"},
        ),
        GpuType("nvidia-h100-80gb", 80, {8: "a3-highgpu-8g"}),
        GpuType("nvidia-h100-mega-80gb", 80, {8: "a3-megagpu-8g"}),
        GpuType("nvidia-h200-141gb", 141, {8: "a3-ultragpu-8g"}),
        GpuType("nvidia-b200", 180, {8: "a4-highgpu-8g"}),
    )
}

CPU: Final = "cpu"
ACCELERATOR_TYPES: Final[list[str]] = [*TPUS, *GPUS, CPU]

TPU_ACCELERATOR_LABEL: Final = "cloud.google.com/gke-tpu-accelerator"
TPU_TOPOLOGY_LABEL: Final = "cloud.google.com/gke-tpu-topology"
GPU_ACCELERATOR_LABEL: Final = "cloud.google.com/gke-accelerator"
# v5e/v6e 2x4 pools of 8-chip and of 4-chip machines carry the same accelerator and topology labels;
# only the machine type tells them apart.
INSTANCE_TYPE_LABEL: Final = "node.kubernetes.io/instance-type"
TPU_RESOURCE: Final = "google.com/tpu"
GPU_RESOURCE: Final = "nvidia.com/gpu"


def jax_platform(accelerator_type: str) -> str:
    """The ``JAX_PLATFORMS`` value of a pod of this accelerator: naming it makes JAX fail when the device
    is missing instead of falling back to the CPU."""
    if accelerator_type in TPUS:
        return "tpu"
    if accelerator_type in GPUS:
        return "cuda"
    return CPU


class UnknownAcceleratorError(ValueError):
    """The type, topology or count is not in the table; the message lists what would be valid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field  # the AcceleratorSpec field at fault
        super().__init__(message)


def tpu_slice(tpu_type: str, topology: str, chips_per_host: int | None = None) -> TpuSlice:
    """The slice for a TPU type and topology; ``chips_per_host`` picks between 2x4's two shapes."""
    generation = TPUS.get(tpu_type)
    if generation is None:
        raise UnknownAcceleratorError("type", f"unknown TPU type {tpu_type!r}; valid: {', '.join(TPUS)}")
    matches = [s for s in generation.slices if s.topology == topology]
    if not matches:
        raise UnknownAcceleratorError(
            "topology",
            f"topology {topology!r} is not valid for TPU {tpu_type}; "
            f"valid: {', '.join(generation.topologies)}",
        )
    if chips_per_host is None:
        return matches[0]
    for candidate in matches:
        if candidate.chips_per_host == chips_per_host:
            return candidate
    valid = sorted({s.chips_per_host for s in matches})
    raise UnknownAcceleratorError(
        "chipsPerHost",
        f"chipsPerHost {chips_per_host} is not valid for TPU {tpu_type} {topology}; valid: {valid}",
    )


def hosts_for(tpu_type: str, topology: str, chips_per_host: int | None = None) -> int:
    """Hosts (VMs, nodes, pods) in one slice."""
    return tpu_slice(tpu_type, topology, chips_per_host).hosts


def gpu_machine(gpu_type: str, count: int) -> str:
    gpu = GPUS.get(gpu_type)
    if gpu is None:
        raise UnknownAcceleratorError("type", f"unknown GPU type {gpu_type!r}; valid: {', '.join(GPUS)}")
    if count not in gpu.machines:
        raise UnknownAcceleratorError(
            "count", f"count {count} is not valid for {gpu_type}; valid: {gpu.counts}"
        )
    return gpu.machines[count]
