"""Write bench/report.md from the JSON results the benchmarks left in bench/ (each section appears once
its benchmark has run)."""

from __future__ import annotations

import json
import os
import platform
import re
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
        f"{b1['int8']['tokens_per_second']:.1f} tokens/s ({b1['int8_over_hf_f32']:.2f}x transformers' f32), "
        f"transformers f32 {b1['hf_f32_tokens_per_second']:.1f}.",
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


def _figure(columns: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, columns, figsize=(5.2 * columns, 3.6), squeeze=False)
    return figure, axes[0]


def _save(figure: Any, name: str) -> str:
    figure.tight_layout()
    figure.savefig(OUT / name, dpi=110, metadata={"Software": None})
    return name


def plot_sweep(r: dict[str, Any]) -> str:
    """Decode tokens/s against batch size, with the bandwidth and compute rooflines of the same run."""
    figure, (ax,) = _figure(1)
    batches = [row["batch"] for row in r["rows"]]
    ax.plot(batches, [row["tokens_per_second"] for row in r["rows"]], "o-", label="gemma-runtime decode")
    machine = r["machine"]
    bandwidth = [b * machine["bandwidth_gbps"] * 1e9 / r["weight_bytes"] for b in batches]
    compute = machine["peak_gflops"] * 1e9 / r["flops_per_token"]
    ax.plot(batches, [min(b, compute) for b in bandwidth], "--", color="grey", label="roofline")
    ax.set(xscale="log", yscale="log", xlabel="batch size (slots)", ylabel="tokens/s")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_title(f"{r['model']} f32, decode throughput vs batch size")
    ax.legend()
    return _save(figure, "throughput_vs_batch.png")


def plot_latency(r: dict[str, Any]) -> str:
    figure, (ttft, tpot) = _figure(2)
    rates = [x["rate_rps"] for x in r["latency_at_rates"]]
    for ax, key, title in ((ttft, "ttft", "time to first token"), (tpot, "tpot", "time per output token")):
        for q in ("p50", "p99"):
            ax.plot(rates, [x[f"{key}_{q}_s"] for x in r["latency_at_rates"]], "o-", label=q)
        ax.set(xlabel="request rate (requests/s)", ylabel="seconds", title=title)
        ax.set_ylim(bottom=0)
        ax.legend()
    return _save(figure, "latency_vs_rate.png")


def plot_training(train: dict[str, Any], loss: dict[str, Any] | None) -> str:
    figure, axes = _figure(2 if loss else 1)
    ax = axes[0]
    names = ["gemma-runtime", f"transformers {train['hf_versions'][1]}"]
    values = [train["ours_tokens_per_second"], train["hf_tokens_per_second"]]
    ax.bar(names, values, color=["tab:blue", "tab:orange"])
    ax.set(ylabel="tokens/s", title=f"{train['variant']} training step, f32 CPU")
    if loss:
        curve = axes[1]
        curve.plot(loss["steps"], loss["loss"])
        curve.set(xlabel="step", ylabel="loss (nats)", title="tiny preset on the sample text")
    return _save(figure, "training.png")


def sweep_section(r: dict[str, Any], plot: str) -> list[str]:
    return [
        "### Decode throughput against batch size",
        "",
        f"`{r['model']}` f32; B requests of {r['prompt']}-token prompts decode {r['tokens']} tokens each "
        "in an engine with B slots (`python -m tests.bench.batch_sweep`); the roofline is the smaller of "
        "B x read bandwidth / weight bytes and the compute peak / FLOPs per token.",
        "",
        "| batch | " + " | ".join(str(row["batch"]) for row in r["rows"]) + " |",
        "| --- | " + " | ".join("---" for _ in r["rows"]) + " |",
        "| tokens/s | " + " | ".join(f"{row['tokens_per_second']:.1f}" for row in r["rows"]) + " |",
        "",
        f"![decode throughput against batch size]({plot})",
        "",
    ]


def compile_cache_section(r: dict[str, Any]) -> list[str]:
    lines = [
        "## A second start with the persistent compilation cache",
        "",
        "`gemma-runtime serve --compilation-cache DIR` started twice on one fresh folder, random weights on "
        "the CPU (`python -m tests.bench.compile_cache_bench`): seconds from launch to `/readyz`, and the "
        "warm-up that compiles (first start) or loads from the cache (second) every step shape.",
        "",
        "| preset | slots x length | programs | first start: ready / warm-up | second start: ready / warm-up "
        "| warm-up ratio | cache size |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"]:
        first, second = c["first"], c["second"]
        cells = [
            c["variant"],
            f"{c['slots']} x {c['max_sequence_length']}",
            f"{first['cache_misses']:.0f} compiled, then {second['cache_hits']:.0f} loaded",
            f"{first['ready_seconds']:.1f} s / {first['warm_up_seconds']:.1f} s",
            f"{second['ready_seconds']:.1f} s / {second['warm_up_seconds']:.1f} s",
            f"{c['warm_up_ratio']:.2f}x",
            f"{c['cache_bytes'] / 1e6:.1f} MB",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return [*lines, ""]


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _fit(run: dict[str, Any]) -> str:
    """A compile's per-chip bytes: the HBM its buffer assignment spans (XLA's memory-usage report) and its
    memory analysis when it compiled, what the compiler said it needs when it did not."""
    if not run["fits"]:
        return f"does not fit: needs {_gib(run['total_bytes'])}"
    hbm = run.get("hbm_report_bytes")
    if not hbm:
        return f"analysis {_gib(run['total_bytes'])}"
    return f"{_gib(hbm)} (analysis {_gib(run['total_bytes'])})"


def _largest(search: dict[str, Any] | None) -> str:
    if search is None:
        return "-"
    tried = ", ".join(f"{size}: {_fit(c)}" for size, c in search["compiled"].items())
    size = search["largest"] if search["largest"] is not None else "none"
    return f"{size} (compiled {tried})"


def _flops(f: dict[str, Any]) -> tuple[str, str, str]:
    if not f["fits"]:
        return "no compiled program", "-", "-"
    return (
        f"{f['flops'] / 1e12:,.1f} TFLOP",
        f"{f['flops_over_model_flops']:.2f}x",
        f"{f['bytes_accessed'] / 1e9:,.0f} GB",
    )


def _kernels(run: dict[str, Any]) -> str:
    if "kernels" not in run:
        return "-"  # no compiled program, or a run from before kernels were counted
    return ", ".join(f"{k} x{n}" for k, n in run["kernels"].items()) or "none (XLA ops only)"


def _buffers(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_gib(r['bytes'])}: {r['shapes']}" for r in rows[:4]) or "-"


def _loss_chunks(m: dict[str, Any]) -> list[str]:
    """Our loss's chunks that XLA's FLOP count leaves out, by count (``maxtext_bench.loss_chunks``)."""
    c, kernels, mt = m["ours"].get("loss_chunks"), m["ours"].get("flops_kernels"), m["maxtext"]["flops_full"]
    if not c or not kernels or not kernels["fits"] or not mt["fits"]:
        return []
    whole = kernels["flops"] + c["uncounted_flops_estimate"]
    return [
        f"XLA counts our loss's loop over {c['chunks']} chunks of {c['chunk']} positions once. By count (8 x "
        "d x V FLOPs per position: the logits, their recomputation in the backward pass and the backward's "
        f"two products), the other chunks add about {c['uncounted_flops_estimate'] / 1e12:,.1f} TFLOP per "
        f"chip: about {whole / 1e12:,.1f} TFLOP with splash on both sides, {whole / mt['flops']:.3f}x "
        f"MaxText's. The logits recomputed in the backward pass, which keep one chunk's logits live "
        f"instead of the whole sequence's, are {c['recompute_flops_estimate'] / 1e12:,.1f} TFLOP of that "
        "(MaxText keeps the whole sequence's logits). These two figures are counts, not compiled ones.",
        "",
    ]


def _diagnosis(r: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """What the shapes in our 1-layer step's largest allocations show, where our step does not fit."""
    if m["ours"]["batch_2_full"]["fits"] or not m["ours"]["largest_buffers_1_layer"]:
        return []
    shapes = " ".join(b["shapes"] for b in m["ours"]["largest_buffers_1_layer"])
    rows, seq = r["chips"] * r["per_device_batch"], r["sequence_length"]
    found = []
    if f"[{rows},{seq}," in shapes:
        found.append(
            f"activations hold the global batch of {rows} rows (`[{rows},{seq},...]`) with the embedding or "
            "hidden axis split over the chips: the step pins no activation sharding, so XLA's partitioner "
            "keeps the FSDP weights' layout and all-gathers and all-reduces activations of the whole batch "
            "instead of gathering weights"
        )
    if re.search(rf"f32\[[\d,]*{seq},{seq}\]", shapes):
        found.append(
            f"attention materialises f32 scores over {seq} x {seq} positions per head (MaxText's splash "
            "kernel never does)"
        )
    if re.search(r"f32\[[\d,]*,256128\]", shapes):
        found.append("the loss materialises the logits in f32 over the whole vocabulary")
    if not found:
        return []
    return [f"Our 1-layer step's largest allocations show: {'; '.join(found)}.", ""]


def _compiles(r: dict[str, Any]) -> str:
    """The run's compiles and their time, and how many it read back from ``GEMMA_MAXTEXT_BENCH_RUNS``."""
    runs = [*r["maxtext_runs"], *r["our_runs"]]
    minutes = sum(run["wall_seconds"] for run in runs) / 60
    read_back = sum(bool(run.get("read_back")) for run in runs)
    kept = (
        f", {read_back} of them read back from the kept results of earlier runs (`GEMMA_MAXTEXT_BENCH_RUNS`)"
        if read_back
        else ""
    )
    return f"{len(runs)} compiles, {minutes:.0f} min of compiling{kept}"


def maxtext_section(r: dict[str, Any]) -> list[str]:
    v = r["versions"]
    compiled = [run for run in r["maxtext_runs"] if run["fits"]]
    negative = (
        "came back negative for every MaxText step and "
        if compiled and all(run["optimal_seconds"] <= 0 for run in compiled)
        else ""
    )
    lines = [
        "## Training beside MaxText: Gemma on v5e-256, sequence 8192 (compiled)",
        "",
        f"Both training steps compiled by XLA's TPU compiler on this machine for {r['accelerator']} "
        f"{r['topology']} ({r['chips']} chips; nothing runs, no TPU): bf16 compute, f32 weights and AdamW "
        f"state, sequence {r['sequence_length']}, FSDP over all chips, per-device batch "
        f"{r['per_device_batch']} unless said. MaxText {v['maxtext']} (jax {v['maxtext_jax']}, libtpu "
        f"{v['maxtext_libtpu']}) in its own Python 3.12 environment, compiled as its `train_compile` does; "
        f"gemma-runtime's step is `gemma-runtime plan --train`'s (jax {v['jax']}, libtpu {v['libtpu']}). "
        "Figures per chip: the HBM that the compiler's buffer assignment spans (its memory-usage report; "
        "what it checks against the chip, and the figure its out-of-memory message names where a step "
        "does not fit) and, in brackets, XLA's memory analysis (arguments + outputs not aliased + "
        "temporaries), which counts every temporary allocation apart and so runs past the HBM figure on "
        "steps with their layers in a scan, beyond the chip on several that compiled; its cost analysis. "
        "A step fits when it compiles; "
        f"the chip's usable HBM is {_gib(r['usable_bytes'])}. FLOPs and bytes accessed count a scanned "
        "loop's body once, so both "
        "are extrapolated from 1- and 2-layer unrolled compiles: total = f(1) + (layers - 1) x "
        "(f(2) - f(1)). "
        "Model FLOPs: `train.flops` (6 x matrix weights per token plus attention over the whole context). "
        "MaxText's 1- and 2-layer steps run its splash attention kernel, which XLA counts as no FLOPs; "
        "ours compile with XLA's attention for the FLOP rows "
        "(every score over the whole context, both directions, its f32 score matrices read and written), "
        "and once more with our splash kernel, which sets the same work beside MaxText's. XLA's count "
        "has a loop's body once, and on slices this size it can turn an FSDP weight's products into loops "
        "over its shards (collective matmuls; our Gemma 2 9B step on a v5e 4x4 counts 2.6x a layer's "
        "forward FLOPs per layer for the 4x of full remat, 4.0x on a v5e 2x2); how much of that happens "
        "here, on either side, was not measured: the FLOP rows are XLA's counts, lower bounds of the work. "
        "Google published 57.7 % MFU for MaxText on Gemma 7B at this configuration; nothing here measures "
        f"time (XLA's cost-model time {negative}is not shown). "
        f"`python -m tests.bench.maxtext_bench` on {r.get('date', 'this machine')}: {_compiles(r)}.",
        "",
    ]
    for model, m in r["models"].items():
        mt, ours = m["maxtext"], m["ours"]
        rows = [
            ("per-chip memory, batch 2, full remat", _fit(mt["batch_2_full"]), _fit(ours["batch_2_full"])),
            (
                "largest per-device batch, full remat",
                _largest(mt["largest_full"]),
                _largest(ours["largest_full"]),
            ),
            (
                "cheapest remat policy that fits at batch 2",
                mt["cheapest_policy"] or "none fits",
                ours["cheapest_policy"] or "none fits",
            ),
            (
                "largest per-device batch, that policy",
                _largest(mt["largest_cheapest"]),
                _largest(ours["largest_cheapest"]),
            ),
            (
                "remat policies compiled at batch 2",
                ", ".join(f"{p}: {_fit(c)}" for p, c in mt["at_batch_2"].items()),
                ", ".join(f"{p}: {_fit(c)}" for p, c in ours["at_batch_2"].items()),
            ),
        ]
        mt_flops, our_flops = _flops(mt["flops_full"]), _flops(ours["flops_full"])
        rows += [
            ("compiled FLOPs per chip per step, full remat", mt_flops[0], our_flops[0]),
            (
                f"÷ model FLOPs ({m['model_flops_per_chip'] / 1e12:,.1f} TFLOP per chip)",
                mt_flops[1],
                our_flops[1],
            ),
            ("bytes accessed per chip per step, full remat", mt_flops[2], our_flops[2]),
        ]
        if "flops_kernels" in ours:  # our 1- and 2-layer steps with splash, as MaxText's are compiled
            k = _flops(ours["flops_kernels"])
            rows += [
                (
                    "compiled FLOPs, full remat, splash in the 1- and 2-layer steps (÷ model FLOPs)",
                    f"{mt_flops[0]} ({mt_flops[1]})",
                    f"{k[0]} ({k[1]})",
                ),
                ("bytes accessed, the same steps", mt_flops[2], k[2]),
            ]
        if "flops_cheapest" in mt:
            f = _flops(mt["flops_cheapest"])
            rows.append((f"compiled FLOPs, {mt['cheapest_policy']} (÷ model FLOPs)", f"{f[0]} ({f[1]})", "-"))
        rows += [
            (
                "compile time, batch 2, full remat (to the error where it does not fit)",
                f"{mt['batch_2_full']['compile_seconds']:.0f} s",
                f"{ours['batch_2_full']['compile_seconds']:.0f} s",
            ),
            (
                "Pallas kernels in the step",
                _kernels(mt["batch_2_full"]),
                _kernels(ours["batch_2_full"]),
            ),
            (
                "largest buffers, 1-layer step (XLA's memory-usage report)",
                _buffers(mt["largest_buffers_1_layer"]),
                _buffers(ours["largest_buffers_1_layer"]),
            ),
        ]
        lines += [
            f"### {model} ({m['layers']} layers)",
            "",
            f"| | MaxText {v['maxtext']} | gemma-runtime |",
            "| --- | --- | --- |",
            *(f"| {a} | {b} | {c} |" for a, b, c in rows),
            "",
            "MaxText's own model-FLOP count for this step: "
            f"{m['maxtext_model_flops_per_chip'] / 1e12:,.1f} TFLOP per chip (causal attention counted at "
            "half)"
            + (
                "; MaxText's compiled FLOPs are "
                f"{mt['flops_full']['flops'] / m['maxtext_model_flops_per_chip']:.2f}x that count."
                if mt["flops_full"]["fits"]
                else "."
            ),
            "",
            *_loss_chunks(m),
            *_diagnosis(r, m),
        ]
    lines += [
        "Every compile, with its command (MaxText's equivalent `train_compile` line; the benchmark runs "
        "`tests/bench/maxtext_driver.py` with the same arguments in MaxText's environment):",
        "",
        "<details><summary>commands and results</summary>",
        "",
        "| command | per chip | compile |",
        "| --- | --- | --- |",
    ]
    for run in [*r["maxtext_runs"], *r["our_runs"]]:
        lines.append(f"| `{run['command']}` | {_fit(run)} | {run['compile_seconds']:.0f} s |")
    return [*lines, "", "</details>", ""]


def _load(name: str) -> dict[str, Any] | None:
    path = OUT / name
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    lines = [
        "# Benchmark report",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}. Measured by `make bench`; "
        "figures are reported, never asserted.",
        "",
    ]
    operator, serve, sweep = _load("operator.json"), _load("serve.json"), _load("sweep.json")
    train, loss = _load("train.json"), _load("loss.json")
    if operator:
        lines += operator_section(operator)
    if serve:
        lines += serve_section(serve)
        lines += [f"![latency percentiles against request rate]({plot_latency(serve)})", ""]
    if sweep:
        lines += sweep_section(sweep, plot_sweep(sweep))
    if train:
        lines += train_section(train)
        if loss:
            lines += [
                "Loss curve: `gemma-runtime train --variant tiny` on the sample text, "
                f"{loss['loss'][0]:.2f} at step {loss['steps'][0]} to {loss['loss'][-1]:.2f} "
                f"at step {loss['steps'][-1]} (`python -m tests.bench.loss_curve`).",
                "",
            ]
        lines += [f"![training tokens/s and loss curve]({plot_training(train, loss)})", ""]
    compile_cache = _load("compile_cache.json")
    if compile_cache:
        lines += compile_cache_section(compile_cache)
    maxtext = _load("maxtext.json")
    if maxtext:
        lines += maxtext_section(maxtext)
    (OUT / "report.md").write_text("\n".join(lines))
    print((OUT / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
