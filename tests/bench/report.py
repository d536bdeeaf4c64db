"""Write bench/report.md from the JSON results the benchmarks left in bench/ (each section appears once
its benchmark has run)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

OUT = Path("bench")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def operator_section(result: dict[str, Any]) -> list[str]:
    rows = [
        ("create → children applied", result["created_to_children_seconds"]),
        ("create → status Ready", result["created_to_ready_seconds"]),
        ("pods Ready → status Ready", result["pods_ready_to_status_ready_seconds"]),
    ]
    memory = result["operator_rss_mib"]
    return [
        "## Operator",
        "",
        f"{result['servers']} tiny GemmaServers created back to back on the local control plane (real API",
        "server, scheduler and controllers; kwok kubelets), then suspended ones up to "
        f"{result['total']} in all.",
        "",
        "| interval | p50 (s) | p99 (s) | max (s) |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {r['p50']} | {r['p99']} | {r['max']} |" for name, r in rows),
        "",
        f"All {result['servers']} Ready {result['all_ready_seconds']} s after the first create. Operator "
        + ", ".join(f"{rss} MiB resident with {count} GemmaServers" for count, rss in memory.items())
        + ".",
        "",
    ]


def main() -> int:
    lines = [
        "# Benchmark report",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}. Measured by `make bench`; "
        "figures are reported, never asserted.",
        "",
    ]
    operator = OUT / "operator.json"
    if operator.exists():
        lines += operator_section(json.loads(operator.read_text()))
    (OUT / "report.md").write_text("\n".join(lines))
    print((OUT / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
