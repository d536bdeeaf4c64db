"""MaxText beside us on the seed's training configuration: Gemma 7B and 2B on v5e-256 (16x16, 256 chips),
bf16 compute, f32 weights, AdamW, sequence 8192, both training steps compiled by XLA's TPU compiler on
this machine (libtpu; no TPU, no weights). MaxText 0.2.5 runs in its own Python 3.12 environment
(``tests.bench.maxtext_env``, made once and cached) through ``tests/bench/maxtext_driver.py``, the steps of
its ``train_compile``; ours is ``gemma_runtime.plan``'s training step in this process.

For each model and side: per-chip memory at per-device batch 2 under full remat; the largest per-device
batch that fits under full remat and under the cheapest remat policy that fits at batch 2 (found by
compiling, each side's own policies); compiled FLOPs and bytes accessed per chip and step, extrapolated
from unrolled 1- and 2-layer compiles (XLA counts a scanned loop's body once), over the model's FLOPs
(ours with XLA's attention, and again with our splash kernel, as MaxText's own compiles run theirs: XLA
counts a kernel as no FLOPs); and, as evidence of where the bytes go, the largest buffers of the 1-layer
step from XLA's memory-usage report. Every figure is XLA's memory or cost analysis, or its out-of-memory
message. Memory per chip is the HBM the buffer assignment spans (``plan.usage``), beside the analysis.

usage: python -m tests.bench.maxtext_bench [--output bench/maxtext.json]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gemma_runtime.config import TrainConfig
from gemma_runtime.model import preset
from gemma_runtime.plan import training, usage
from gemma_runtime.plan.compiled import Program, compile_one
from gemma_runtime.plan.search import largest_fitting
from gemma_runtime.plan.topology import chip, slice_devices
from gemma_runtime.train import flops
from gemma_runtime.train.step import loss_chunk
from tests.bench import maxtext_env, results
from tests.bench.maxtext_driver import pallas_kernels

MODELS = ("gemma-7b", "gemma-2b")
ACCELERATOR, TOPOLOGY, MAXTEXT_TOPOLOGY = "v5e", "16x16", "v5e-256"
SEQUENCE = 8192
BATCH = 2  # per device, the seed's
MAX_BATCH = 16  # the per-device batch search stops here
# MaxText's remat policies kept on the device, fastest (saves the most) to slowest, as its base.yml
# orders them; the offloading ones need host memory and are left out.
MAXTEXT_POLICIES = (
    "minimal_with_context",
    "minimal",
    "save_dot_with_context_except_mlp",
    "save_dot_except_mlpwi",
    "save_dot_except_mlp",
    "save_qkv_proj",
    "save_out_proj",
    "full",
)
OUR_POLICIES = ("none", "minimal", "full")  # fastest to slowest
DRIVER = Path(__file__).with_name("maxtext_driver.py")
TOP_BUFFERS = 6


def _usable() -> int:
    return chip(ACCELERATOR).usable_bytes


# --- XLA's memory-usage report ---------------------------------------------------------------------------


def memory_report(folder: Path, module: str) -> dict[str, Any]:
    """``plan.usage``'s reading of the memory-usage report XLA dumped for ``module`` (MaxText's step), as
    the runs keep it: the HBM total and the largest allocations."""
    report = usage.read(folder, module, TOP_BUFFERS)
    if report is None:
        return {}
    return _usage(report.hbm_bytes, report.largest)


def _usage(hbm_bytes: int | None, largest: tuple[usage.Buffer, ...]) -> dict[str, Any]:
    return {"hbm_report_bytes": hbm_bytes, "largest_buffers": [dataclasses.asdict(b) for b in largest]}


# --- MaxText ------------------------------------------------------------------------------------------


def maxtext_args(model: str, batch: int, policy: str, layers: int | None, out: Path) -> list[str]:
    """MaxText's overrides of its base.yml for one compile; ``layers``: that many unrolled layers."""
    args = [
        f"model_name={model}",
        f"compile_topology={MAXTEXT_TOPOLOGY}",
        "compile_topology_num_slices=1",
        f"per_device_batch_size={batch}",
        f"max_target_length={SEQUENCE}",
        f"remat_policy={policy}",
        "dataset_type=synthetic",
        "enable_checkpointing=false",
        "run_name=gemma-operator-bench",
        f"base_output_directory={out}",
    ]
    if layers is not None:
        args += ["scan_layers=false", "override_model_config=true", f"base_num_decoder_layers={layers}"]
    return args


# What our process's jax and libtpu set or need, which must not reach MaxText's (TPU_LIBRARY_PATH would
# load our older libtpu into it).
_OUR_ENVIRONMENT = {"TPU_LIBRARY_PATH", "PYTHONPATH", "JAX_PLATFORMS", "XLA_FLAGS", "LIBTPU_INIT_ARGS"}


def maxtext_command(args: list[str]) -> str:
    """The equivalent command line of MaxText's own AOT compile, as it is documented."""
    return (
        "python -m maxtext.trainers.pre_train.train_compile <site-packages>/maxtext/configs/base.yml "
        + " ".join(a for a in args if not a.startswith("base_output_directory="))
        + " base_output_directory=OUT"
    )


Key = tuple[Any, ...]  # (model, batch, policy, layers), and ours: the mode where not "xla"


class Kept:
    """``GEMMA_MAXTEXT_BENCH_RUNS`` names a JSON-lines file that keeps every compile's result, each side's
    under its name, and is read back first: a rerun (after a failure, or after a change to the report)
    compiles only what is missing. Without it nothing is kept."""

    def __init__(self, side: str) -> None:
        self.side = side
        name = os.environ.get("GEMMA_MAXTEXT_BENCH_RUNS")
        self.path = Path(name) if name else None

    def load(self) -> dict[Key, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        runs = (json.loads(line) for line in self.path.read_text().splitlines())
        return {
            tuple(r["key"]): {**r, "read_back": True} for r in runs if r.get("side", "maxtext") == self.side
        }

    def add(self, key: Key, run: dict[str, Any]) -> None:
        run.update(key=list(key), side=self.side)
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(json.dumps(run) + "\n")


@dataclasses.dataclass
class MaxText:
    """MaxText's compiles, each in a subprocess of its own environment."""

    python: Path
    work: Path
    runs: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kept = Kept("maxtext")
        self.runs.update(self.kept.load())

    def compile(
        self, model: str, batch: int, policy: str, layers: int | None = None, *, mode: str = "xla"
    ) -> dict[str, Any]:
        """``mode`` changes nothing here: MaxText's 1- and 2-layer steps run as MaxText runs them."""
        key = (model, batch, policy, layers)
        if key in self.runs:
            return self.runs[key]
        args = maxtext_args(model, batch, policy, layers, self.work / "out")
        env = {k: v for k, v in os.environ.items() if k not in _OUR_ENVIRONMENT}
        dump = self.work / f"dump-{model}-{batch}-{policy}-{layers}"
        env["XLA_FLAGS"] = f"--xla_dump_to={dump}"
        started = time.monotonic()
        done = subprocess.run(
            [str(self.python), str(DRIVER), *args], env=env, capture_output=True, text=True, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(f"MaxText's compile failed ({' '.join(args)}):\n{done.stderr[-4000:]}")
        run: dict[str, Any] = json.loads(lines[-1])
        run["wall_seconds"] = round(time.monotonic() - started, 1)
        run["command"] = maxtext_command(args)
        run.update(memory_report(dump, "jit_train_step"))
        shutil.rmtree(dump, ignore_errors=True)
        program = maxtext_program(run)
        run.update(total_bytes=program.total_bytes, fits=program.fits)
        self.kept.add(key, run)
        print(
            f"maxtext {model} batch {batch} {policy} layers {layers or 'all'}: "
            f"{program.peak_bytes / 2**30:.2f} GiB, fits {program.fits}, "
            f"compile {run['compile_seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        self.runs[key] = run
        return run


def maxtext_program(run: dict[str, Any]) -> Program:
    return Program(
        "maxtext",
        argument_bytes=run.get("argument_bytes", 0),
        output_bytes=run.get("output_bytes", 0),
        alias_bytes=run.get("alias_bytes", 0),
        temp_bytes=run.get("temp_bytes", 0),
        flops=run.get("flops", 0.0),
        bytes_accessed=run.get("bytes_accessed", 0.0),
        compile_seconds=run.get("compile_seconds", 0.0),
        error=run.get("error"),
        hbm_bytes=run.get("hbm_report_bytes"),
    )


# --- ours ---------------------------------------------------------------------------------------------


# How our 1- and 2-layer steps compile: "xla", unrolled with XLA's attention (what the FLOP extrapolation
# compiles: XLA counts a scan's body once and a kernel as none); "kernels", unrolled with the trainer's
# splash attention (as MaxText's are, attention then counted by neither); "as run", as the trainer runs.
MODES: dict[str, dict[str, Any]] = {
    "xla": {"attention": "xla", "scan_layers": False},
    "kernels": {"scan_layers": False},
    "as run": {},
}


def our_config(model: str, batch: int, remat: str, *, mode: str = "as run") -> TrainConfig:
    """Our step in one of the ``MODES``."""
    chips = 256
    return TrainConfig.model_validate(
        {
            "name": "maxtext-bench",
            "model": {"variant": model},
            "data": {"path": "unused"},
            "training": {
                "steps": 1,
                "sequence_length": SEQUENCE,
                "global_batch_size": batch * chips,
                "precision": "bf16",
                "remat": remat,
                **MODES[mode],
            },
            "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        }
    )


def our_command(model: str, batch: int, remat: str) -> str:
    return (
        f"gemma-runtime plan --train --variant {model} --accelerator {ACCELERATOR} --topology {TOPOLOGY} "
        f"--batch-size {batch * 256} --seq-len {SEQUENCE} --precision bf16 --remat {remat} --no-search"
    )


class _Keeping:
    """A lowered program that keeps what it compiled to (its text names the Pallas kernels)."""

    def __init__(self, lowered: Any) -> None:
        self.lowered = lowered
        self.compiled: Any = None

    def compile(self, compiler_options: dict[str, Any] | None = None) -> Any:
        self.compiled = self.lowered.compile(compiler_options=compiler_options)
        return self.compiled


@dataclasses.dataclass
class Ours:
    devices: list[Any]
    runs: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kept = Kept("ours")
        self.runs.update(self.kept.load())

    def compile(
        self, model: str, batch: int, remat: str, layers: int | None = None, *, mode: str = "xla"
    ) -> dict[str, Any]:
        """``layers``: that many of the preset's, compiled in ``mode`` (``MODES``); the whole step is
        always compiled as the trainer runs it."""
        mode = mode if layers is not None else "as run"
        key: Key = (model, batch, remat, layers)
        if layers is not None and mode != "xla":
            key += (mode,)
        if key in self.runs:
            return self.runs[key]
        shape = preset(model).replace(num_layers=layers) if layers is not None else None
        started = time.monotonic()
        config = our_config(model, batch, remat, mode=mode)
        keeping = _Keeping(training.lower(config, self.devices, shape))
        program = compile_one(f"{model} batch {batch} remat {remat}", keeping)
        run = program.to_dict()
        if program.fits:
            run["kernels"] = pallas_kernels(keeping.compiled.as_text())
        run["wall_seconds"] = round(time.monotonic() - started, 1)
        run["command"] = (
            our_command(model, batch, remat)
            if layers is None
            else f"gemma_runtime.plan.training.compile_step with the {model} preset's num_layers={layers}"
            + "".join(f", training.{k}={str(v).lower()}" for k, v in MODES[mode].items())
        )
        run.update(_usage(program.hbm_bytes, program.largest_buffers))
        print(
            f"ours {model} batch {batch} {remat} layers {layers or 'all'} ({mode}): "
            f"{program.peak_bytes / 2**30:.2f} GiB, fits {program.fits}, "
            f"compile {program.compile_seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        self.kept.add(key, run)
        self.runs[key] = run
        return run


# --- the figures, the same way for both sides -----------------------------------------------------------

Side = MaxText | Ours


def _program(run: dict[str, Any]) -> Program:
    return maxtext_program(run)  # our runs carry the same keys


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    program = _program(run)
    return {
        "total_bytes": program.total_bytes,
        "fits": program.fits,
        "hbm_report_bytes": run.get("hbm_report_bytes"),
    }


def largest_batch(backend: Side, model: str, policy: str) -> dict[str, Any]:
    """The largest per-device batch that fits under ``policy``, searched by compiling from batch 2."""
    first = _program(backend.compile(model, BATCH, policy))
    slope = first.temp_bytes / BATCH if first.fits else None
    found = largest_fitting(
        lambda size: _program(backend.compile(model, size, policy)), BATCH, _usable(), MAX_BATCH, slope=slope
    )
    return {
        "policy": policy,
        "largest": found.size,
        "proven": found.proven,
        "compiled": {
            str(size): _summary(backend.compile(model, size, policy)) for size in sorted(found.compiled)
        },
    }


def cheapest_policy(backend: Side, model: str, policies: tuple[str, ...]) -> str | None:
    """The fastest policy (``policies`` run fastest to slowest) that fits at batch 2: a binary search,
    each policy taken to need no more memory than the one before it in the list."""
    low, high = 0, len(policies) - 1
    if not _program(backend.compile(model, BATCH, policies[high])).fits:
        return None
    while low < high:  # policies[high] fits
        middle = (low + high) // 2
        if _program(backend.compile(model, BATCH, policies[middle])).fits:
            high = middle
        else:
            low = middle + 1
    return policies[high]


def extrapolated(backend: Side, model: str, policy: str, mode: str = "xla") -> dict[str, Any]:
    """Compiled FLOPs and bytes accessed per chip for the whole depth, from 1 and 2 unrolled layers."""
    layers = preset(model).num_layers
    one, two = (_program(backend.compile(model, BATCH, policy, n, mode=mode)) for n in (1, 2))
    out: dict[str, Any] = {"policy": policy, "layers": layers, "fits": one.fits and two.fits}
    if not out["fits"]:
        return out  # no cost analysis without a compiled program
    total = one.flops + (layers - 1) * (two.flops - one.flops)
    accessed = one.bytes_accessed + (layers - 1) * (two.bytes_accessed - one.bytes_accessed)
    return {
        **out,
        "flops_1_layer": one.flops,
        "flops_2_layers": two.flops,
        "flops": total,
        "bytes_accessed": accessed,
        "flops_over_model_flops": total / model_flops_per_chip(model),
    }


def loss_chunks(model: str) -> dict[str, Any]:
    """Our loss runs as a scan over chunks of the sequence (``train.step.loss_chunk``), which XLA's FLOP
    count has once. By count, not compiled: each position of a chunk costs 8 x d x V FLOPs (the logits,
    their recomputation in the backward pass, and the backward's two products), 2 x d x V of it the
    recomputation, which MaxText, holding the whole sequence's logits, does not do."""
    shape = preset(model)
    chunks = SEQUENCE // loss_chunk(SEQUENCE)
    per_position = shape.embed_dim * shape.vocab_size
    return {
        "chunk": SEQUENCE // chunks,
        "chunks": chunks,
        "uncounted_flops_estimate": 8 * per_position * BATCH * SEQUENCE * (chunks - 1) / chunks,
        "recompute_flops_estimate": 2 * per_position * BATCH * SEQUENCE,
    }


def model_flops_per_chip(model: str) -> float:
    """Our count (``train.flops``: 6 x matrix weights per token, attention over the full context, both
    directions), per chip for a step of per-device batch 2."""
    return flops.train_flops_per_token(preset(model), SEQUENCE) * BATCH * SEQUENCE


def side(backend: Side, model: str, policies: tuple[str, ...], every_policy: bool) -> dict[str, Any]:
    """One side's figures for ``model``; ``every_policy``: compile all of ``policies`` at batch 2 (ours:
    three), else only those the search for the cheapest one needs (MaxText: eight)."""
    if every_policy:
        for policy in policies:
            backend.compile(model, BATCH, policy)
    cheapest = cheapest_policy(backend, model, policies)
    out: dict[str, Any] = {
        "batch_2_full": backend.compile(model, BATCH, "full"),
        "largest_full": largest_batch(backend, model, "full"),
        "cheapest_policy": cheapest,
        "largest_cheapest": (
            largest_batch(backend, model, cheapest) if cheapest and cheapest != "full" else None
        ),
        "flops_full": extrapolated(backend, model, "full"),
    }
    if cheapest and cheapest != "full":
        out["flops_cheapest"] = extrapolated(backend, model, cheapest)
    out["at_batch_2"] = {
        key[2]: _summary(r)
        for key, r in backend.runs.items()  # ours also keeps 1- and 2-layer steps under 5-part keys
        if key[:2] == (model, BATCH) and key[3:] == (None,)
    }
    if isinstance(backend, Ours):  # attention left out of the count as MaxText's own compiles leave it
        out["flops_kernels"] = extrapolated(backend, model, "full", mode="kernels")
        out["loss_chunks"] = loss_chunks(model)
    one_layer = backend.compile(model, BATCH, "full", 1, mode="as run")
    out["largest_buffers_1_layer"] = one_layer.get("largest_buffers", [])
    return out


def run() -> dict[str, Any]:
    started = time.monotonic()
    python = maxtext_env.ensure_maxtext()
    setup_seconds = time.monotonic() - started
    out: dict[str, Any] = {
        "accelerator": ACCELERATOR,
        "topology": TOPOLOGY,
        "chips": 256,
        "sequence_length": SEQUENCE,
        "per_device_batch": BATCH,
        "usable_bytes": _usable(),
        "maxtext_env": {"python": str(python), "setup_seconds": round(setup_seconds, 1)},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="gemma-maxtext-bench-") as folder:
        work = Path(folder)
        maxtext = MaxText(python, work / "maxtext")
        ours = Ours(slice_devices(ACCELERATOR, TOPOLOGY))
        for model in MODELS:
            shape = preset(model)
            out["models"][model] = {
                "layers": shape.num_layers,
                "model_flops_per_chip": model_flops_per_chip(model),
                "maxtext": side(maxtext, model, MAXTEXT_POLICIES, every_policy=False),
                "ours": side(ours, model, OUR_POLICIES, every_policy=True),
            }
            mt_flops = maxtext.compile(model, BATCH, "full")["model_tflops"]
            out["models"][model]["maxtext_model_flops_per_chip"] = mt_flops["total"] * 1e12
        out["maxtext_runs"] = list(maxtext.runs.values())
        out["our_runs"] = list(ours.runs.values())
    out["versions"] = _versions(python)
    out["date"] = time.strftime("%Y-%m-%d")
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def _versions(python: Path) -> dict[str, str]:
    from importlib.metadata import version

    theirs = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.metadata import version as v; "
            "print(v('maxtext'), v('jax'), v('libtpu'), v('flax'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "maxtext": theirs[0],
        "maxtext_jax": theirs[1],
        "maxtext_libtpu": theirs[2],
        "maxtext_flax": theirs[3],
        "jax": version("jax"),
        "libtpu": version("libtpu"),
        "flax": version("flax"),
    }


if __name__ == "__main__":
    results.main("tests.bench.maxtext_bench", __doc__ or "", "bench/maxtext.json", run)
