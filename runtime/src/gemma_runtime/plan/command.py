"""The ``gemma-runtime plan`` command line. JAX-free until a plan starts.

A TPU is answered by XLA's TPU compiler (libtpu, the ``tpu-plan`` extra): the real serving or training
step compiled for the slice, per chip. A GPU or the CPU is answered by the memory model alone (serving).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gemma_runtime import accelerators
from gemma_runtime.config import ConfigError, ServeConfig, TrainConfig, serve_mesh_flag, train_mesh_flag

DESCRIPTION = (
    "Will it fit, and how fast can it be? Compile the real serving step (every chunk bucket, with its KV "
    "cache) or training step (optimizer state, gradient accumulation, remat) for a TPU slice with XLA's "
    "TPU compiler, on this machine, without a TPU and without weights; print per-chip bytes against the "
    "chip's usable HBM, the largest batch that fits, compiled against model FLOPs, and a roofline time "
    "per step. GPUs and the CPU get the memory model's serving plan."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a ServeConfig or TrainConfig YAML (its kind decides)")
    parser.add_argument("--train", action="store_true", help="plan a training step (default: serving)")
    parser.add_argument("--variant", help="model preset, e.g. gemma2-9b")
    parser.add_argument(
        "--accelerator", help="v5e, v5p, v6e (or TYPE:TOPOLOGY), a GPU type (TYPE:COUNT) or cpu"
    )
    parser.add_argument("--topology", help="TPU topology, e.g. 2x4 or 2x2x2")
    parser.add_argument("--chips-per-host", type=int, help="picks between v5e/v6e 2x4's two shapes (8 or 4)")
    parser.add_argument(
        "--mesh",
        help="serving: DATAxTENSOR or DATAxEXPERTxTENSOR (default: the memory model's); training: "
        "data,fsdp,tensor[,expert]",
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument("--max-batch-size", type=int, help="decode slots (default: the largest that fits)")
    serve.add_argument("--max-sequence-length", type=int, default=4096, help="default 4096")
    serve.add_argument("--max-prefill-length", type=int, default=1024, help="default 1024")
    serve.add_argument("--quantization", choices=["none", "int8"], default="none")
    serve.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    serve.add_argument(
        "--programs",
        choices=["all", "largest"],
        default="all",
        help="all: decode and every chunk bucket the engine compiles; largest: decode and the largest chunk",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, help="global batch, sequences (default: 1 per device)")
    train.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    train.add_argument("--precision", choices=["bf16", "f32"], default="bf16", help="compute dtype")
    train.add_argument("--remat", choices=["none", "minimal", "full"], default="minimal")
    train.add_argument("--accumulation", type=int, default=1, help="gradient accumulation steps")
    train.add_argument("--lora-rank", type=int, help="plan LoRA adapters of this rank")
    train.add_argument(
        "--attention",
        choices=["auto", "xla"],
        default="auto",
        help="auto: splash attention where a tile divides the sequence; xla: XLA's attention",
    )
    train.add_argument("--no-scan-layers", action="store_true", help="unroll the layers instead of a scan")
    parser.add_argument(
        "--no-search", action="store_true", help="do not compile further sizes to find the largest that fits"
    )
    parser.add_argument("--workers", type=int, help="programs compiled side by side (default: the cores)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def _accelerator(args: argparse.Namespace) -> dict[str, Any]:
    kind, _, detail = (args.accelerator or "").partition(":")
    if not kind:
        raise ConfigError("give --accelerator (e.g. v5e --topology 2x4) or --config")
    out: dict[str, Any] = {"type": kind}
    topology = args.topology or (detail if detail and not detail.isdigit() else None)
    if topology:
        out["topology"] = topology
    if detail.isdigit():
        out["count"] = int(detail)
    if args.chips_per_host:
        out["chips_per_host"] = args.chips_per_host
    return out


def serve_config(args: argparse.Namespace) -> ServeConfig:
    base: dict[str, Any] = _document(args.config) if args.config else {}
    model = dict(base.get("model") or {})
    if args.variant:
        model["variant"] = args.variant
    if "variant" not in model:
        raise ConfigError("give --variant or --config")
    flat: dict[str, Any] = {
        "max_sequence_length": args.max_sequence_length,
        "max_prefill_length": min(args.max_prefill_length, args.max_sequence_length),
        "quantization": args.quantization,
        "dtype": args.dtype,
    }
    if args.config is not None:  # the file's values win over the flags' defaults
        flat = {}
    if args.max_batch_size:
        flat["max_batch_size"] = args.max_batch_size
    if args.accelerator:
        flat["accelerator"] = _accelerator(args)
    if args.mesh:
        flat["mesh"] = serve_mesh_flag(args.mesh)
    document = {"served_model_name": model["variant"], **base, **flat, "model": model}
    try:
        return ServeConfig.model_validate(document)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def auto_batch(args: argparse.Namespace) -> bool:
    """No batch size given: plan the largest that fits, as the operator fills an unset maxBatchSize."""
    return not args.max_batch_size and not (args.config and "max_batch_size" in _document(args.config))


def train_config(args: argparse.Namespace, devices: int) -> TrainConfig:
    if args.config is not None:
        return TrainConfig.model_validate(_document(args.config))
    if not args.variant:
        raise ConfigError("give --variant or --config")
    mesh = train_mesh_flag(args.mesh or "1,-1,1")
    document = {
        "name": "plan",
        "model": {"variant": args.variant},
        "data": {"path": "unused"},
        "training": {
            "steps": 1,
            "global_batch_size": args.batch_size or devices * args.accumulation,
            "sequence_length": args.seq_len,
            "precision": args.precision,
            "remat": args.remat,
            "gradient_accumulation_steps": args.accumulation,
            "attention": args.attention,
            "scan_layers": not args.no_scan_layers,
            **({"lora": {"rank": args.lora_rank}} if args.lora_rank else {}),
        },
        "mesh": mesh,
    }
    try:
        return TrainConfig.model_validate(document)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _document(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return loaded


def run(args: argparse.Namespace) -> int:
    # The plan compiles for the slice and runs nothing: never take this host's own accelerator.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    training = args.train or (args.config is not None and _document(args.config).get("kind") == "train")
    try:
        if training:
            return _train(args)
        return _serve(args)
    except (ConfigError, ValueError, RuntimeError) as err:  # PlanError, TrainError, TopologyError
        print(f"error: {err}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    config = serve_config(args)
    acc = config.accelerator
    if acc is None or acc.type not in accelerators.TPUS:
        return _memory_model_only(config, args)
    from gemma_runtime.plan.plans import serving_plan

    plan = serving_plan(
        config,
        auto_batch=auto_batch(args),
        programs=args.programs,
        search=not args.no_search,
        workers=args.workers,
    )
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.text())
    return 0 if plan.fits else 1


def _memory_model_only(config: ServeConfig, args: argparse.Namespace) -> int:
    """A GPU or the CPU: the memory model's plan (what the operator and the runtime check)."""
    from gemma_runtime import memory
    from gemma_runtime.serve.plan import chips_of, plan

    platform = accelerators.jax_platform(config.accelerator.type) if config.accelerator else "cpu"
    # An unset batch is the largest that fits where the memory is known; the CPU's is not: the default.
    auto = auto_batch(args) and chips_of(config, None).usable_bytes is not None
    try:
        planned = plan(config, platform=platform, auto_batch=auto)
    except memory.PlanError as err:
        print(f"does not fit (memory model): {err}")
        return 1
    summary = f"memory model (no compiler for {platform}): {planned.summary()}"
    print(json.dumps({"kind": "serve", "memory_model": summary, "fits": True}) if args.json else summary)
    return 0


def _train(args: argparse.Namespace) -> int:
    acc = _accelerator(args)
    if acc["type"] not in accelerators.TPUS or "topology" not in acc:
        raise ConfigError("a training plan compiles for a TPU slice: give --accelerator v5e --topology 4x4")
    tpu = accelerators.tpu_slice(acc["type"], acc["topology"], acc.get("chips_per_host"))
    config = train_config(args, tpu.chips)
    from gemma_runtime.plan.plans import training_plan

    plan = training_plan(
        config, acc["type"], acc["topology"], acc.get("chips_per_host"), search=not args.no_search
    )
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.text())
    return 0 if plan.fits else 1
