"""A compiled plan, as text for people and as JSON for machines. Every figure is per chip.

The roofline time of a program is max(compiled FLOPs / peak FLOP/s, bytes accessed / HBM bandwidth), from
the chip's published peak and bandwidth: a bound, not a measurement. XLA's own cost-model estimate is
shown beside it only where it is positive.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import Any

from gemma_runtime.memory import GiB
from gemma_runtime.plan.compiled import Program
from gemma_runtime.plan.topology import Chip


def libtpu_version() -> str:
    try:
        return importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def roofline_seconds(program: Program, chip: Chip) -> float:
    return max(program.flops / chip.peak_flops, program.bytes_accessed / chip.hbm_bytes_per_s)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What was compiled (``title``, ``layout``), for which chip, and what the compiler said."""

    kind: str  # "serve" or "train"
    title: str
    layout: dict[str, Any]
    chip: Chip
    chips: int  # chips the programs span (one host for serving, the slice for training)
    programs: list[Program]
    model_flops: list[float]  # per program, over all ``chips``
    largest: int | None = None  # slots (serving) or per-device batch (training) that fit, by compiling
    largest_proven: bool = False
    largest_note: str = ""
    memory_model: dict[str, Any] | None = None  # the analytic model's bytes per chip, where it has them

    @property
    def peak(self) -> Program:
        """The program that needs the most HBM."""
        return max(self.programs, key=lambda p: p.peak_bytes)

    @property
    def fits(self) -> bool:
        return all(p.fits for p in self.programs)

    def to_dict(self) -> dict[str, Any]:
        programs = []
        for program, useful in zip(self.programs, self.model_flops, strict=True):
            per_chip = useful / self.chips
            programs.append(
                {
                    **program.to_dict(),
                    "model_flops": per_chip,
                    "flops_over_model_flops": program.flops / per_chip if per_chip and program.fits else None,
                    "roofline_seconds": roofline_seconds(program, self.chip) if program.fits else None,
                }
            )
        return {
            "kind": self.kind,
            "title": self.title,
            "layout": self.layout,
            "compiler": f"XLA:TPU, libtpu {libtpu_version()}",
            "chip": dataclasses.asdict(self.chip),
            "chips": self.chips,
            "fits": self.fits,
            "peak_bytes": self.peak.peak_bytes,
            "programs": programs,
            "largest": self.largest,
            "largest_proven": self.largest_proven,
            "memory_model": self.memory_model,
        }

    def text(self) -> str:
        usable = self.chip.usable_bytes / GiB
        lines = [
            self.title,
            f"XLA's TPU compiler (libtpu {libtpu_version()}), per chip of {self.chip.name} "
            f"({usable:.2f} GiB usable):",
            f"  {'program':<14}{'arguments':>11}{'outputs':>10}{'in place':>10}{'temporary':>11}"
            f"{'total':>10}{'HBM':>10}  fits{'FLOPs':>10}{'/ model':>9}{'accessed':>10}{'roofline':>10}",
        ]
        for program, useful in zip(self.programs, self.model_flops, strict=True):
            lines.append("  " + _row(program, useful / self.chips, self.chip))
        peak = self.peak
        verdict = "fits" if self.fits else "does NOT fit"
        peak_gib = peak.peak_bytes / GiB
        lines.append(f"peak {peak_gib:.2f} GiB of {usable:.2f} GiB usable per chip ({peak.name}): {verdict}")
        if any(p.fits and p.total_bytes > 1.01 * p.peak_bytes for p in self.programs):
            lines.append(
                "total: XLA's memory analysis, every temporary buffer counted apart; HBM: what the "
                "compiler's buffer assignment spans (buffers never live at once share bytes), what it "
                "checks against the chip"
            )
        if self.memory_model is not None:  # held to the largest total, as the committed cell figures are
            model = self.memory_model["total_bytes"]
            total = max(p.total_bytes for p in self.programs)
            diff = (model - total) / total * 100 if total else 0.0
            lines.append(
                f"memory model (what the operator checks): {self.memory_model['summary']}; "
                f"{diff:+.1f} % against the compiler's total"
            )
        if self.largest_note:
            lines.append(self.largest_note)
        default = Program("").flops_source
        for source in dict.fromkeys(p.flops_source for p in self.programs if p.flops_source != default):
            lines.append(f"FLOPs and bytes accessed: {source}")
        seconds = ", ".join(f"{p.name} {p.compile_seconds:.0f} s" for p in self.programs)
        lines.append(f"compiled in: {seconds}")
        lines.append(
            "roofline: max(FLOPs / peak, bytes accessed / HBM bandwidth) per step, a bound and not a "
            "measurement; XLA's cost-model estimate is shown only where positive"
        )
        return "\n".join(lines)


def _row(program: Program, model_flops: float, chip: Chip) -> str:
    name = f"{program.name:<14}"
    if not program.fits:
        needed = program.total_bytes / GiB
        return f"{name}{'':>52}{needed:>9.2f}G  no   ({program.error})"
    ratio = f"{program.flops / model_flops:.2f}" if model_flops else "-"
    estimate = f", XLA estimate {_time(program.optimal_seconds)}" if program.optimal_seconds else ""
    return (
        f"{name}{_gib(program.argument_bytes)}{_gib(program.output_bytes, 10)}{_gib(program.alias_bytes, 10)}"
        f"{_gib(program.temp_bytes)}{_gib(program.total_bytes, 10)}{_gib(program.peak_bytes, 10)}  yes "
        f"{_si(program.flops, 'F'):>10}{ratio:>9}{_si(program.bytes_accessed, 'B'):>10}"
        f"{_time(roofline_seconds(program, chip)):>10}{estimate}"
    )


def _gib(value: int, width: int = 11) -> str:
    return f"{value / GiB:>{width - 1}.2f}G"


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{prefix}{unit}"
    return f"{value:.0f}{unit}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
