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


def train_section(r: dict[str, Any]) -> list[str]:
    gflops = r["train_flops_per_token"] / 1e9
    return [
        "## Training",
        "",
        f"`{r['variant']}` ({r['params'] / 1e6:.0f} M parameters), sequence {r['sequence_length']}, "
        f"global batch {r['global_batch_size']}, AdamW, f32, the same token rows on both sides; median of "
        f"{r['timed_steps']} timed steps after one warm-up step. MFU = tokens/s x {gflops:.2f} GFLOP per "
        f"token (6N + attention) over the measured peak of a 2048-cube f32 matrix product in JAX, "
        f"{r['peak_flops_jax_matmul'] / 1e9:.0f} GFLOP/s "
        f"(PyTorch's: {r['peak_flops_torch_matmul'] / 1e9:.0f}).",
        "",
        "| | tokens/s | MFU |",
        "| --- | --- | --- |",
        f"| gemma-runtime (JAX, jitted step) | {r['ours_tokens_per_second']:.1f} | {r['ours_mfu']:.1%} |",
        f"| transformers {r['hf_versions'][1]} (torch {r['hf_versions'][0]}) | "
        f"{r['hf_tokens_per_second']:.1f} | {r['hf_mfu']:.1%} |",
        "",
        f"Ratio: {r['speedup']:.2f}x the transformers training step's tokens/s.",
        "",
    ]


def serve_section(r: dict[str, Any]) -> list[str]:
    plan, m, off, b1 = r["plan"], r["machine"], r["offline"], r["batch1_decode"]
    quick = " (the `--quick` plan)" if r.get("quick") else ""
    return [
        "## Serving",
        "",
        f"`{r['model']}` f32 on CPU{quick}: {plan['requests']} requests, prompt lengths "
        f"{plan['prompt_lengths'][0]}-{plan['prompt_lengths'][1]}, output lengths "
        f"{plan['output_lengths'][0]}-{plan['output_lengths'][1]} (seeded), max batch {plan['batch']}; "
        "transformers "
        f"{r['versions']['transformers']} `generate` runs static batches in arrival order on the same "
        "weights. "
        f"Measured in the same run: peak {m['peak_gflops']:.0f} GFLOP/s (large f32 matrix product), "
        f"read bandwidth {m['bandwidth_gbps']:.1f} GB/s (large matrix-vector product).",
        "",
        "| | useful tokens/s | of the compute roofline |",
        "| --- | --- | --- |",
        "| gemma-runtime (continuous batching, chunked prefill) | "
        f"{off['ours']['useful_tokens_per_second']:.1f} | {off['ours']['roofline_fraction']:.0%} |",
        f"| transformers `generate` | {off['hf']['useful_tokens_per_second']:.1f} | |",
        "",
        f"Ratio: {off['speedup']:.2f}x. Batch-1 decode: f32 {b1['none']['tokens_per_second']:.1f} tokens/s "
        f"({b1['none']['roofline_fraction']:.0%} of the bandwidth roofline), int8 "
        f"{b1['int8']['tokens_per_second']:.1f} tokens/s, transformers f32 "
        f"{b1['hf_f32_tokens_per_second']:.1f}.",
        "",
        "| request rate (req/s) | TTFT p50 (s) | TTFT p99 (s) | TPOT p50 (s) | TPOT p99 (s) |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {x['rate_rps']:.2f} | {x['ttft_p50_s']:.2f} | {x['ttft_p99_s']:.2f} | {x['tpot_p50_s']:.3f} "
            f"| {x['tpot_p99_s']:.3f} |"
            for x in r["latency_at_rates"]
        ),
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
    serve = OUT / "serve.json"
    if serve.exists():
        lines += serve_section(json.loads(serve.read_text()))
    train = OUT / "train.json"
    if train.exists():
        lines += train_section(json.loads(train.read_text()))
    (OUT / "report.md").write_text("\n".join(lines))
    print((OUT / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
