"""`gemma-runtime train`: from ``--config FILE`` (what the operator mounts) or from flags for the common
case by hand. JAX is imported only when a run starts, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from gemma_runtime.config import (
    INTERRUPTED_EXIT_CODE,
    ConfigError,
    TrainConfig,
    distributed,
    load_train_config,
    train_mesh_flag,
)
from gemma_runtime.endpoints import write_message

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Train or fine-tune a Gemma model: sharded over the devices present (and over every process of a "
    "multi-host job), resumable from the latest checkpoint, with /progress, /metrics and /healthz on "
    "process 0. Either --config FILE or flags: gemma-runtime train --variant tiny --steps 200 "
    "--output /tmp/run (the sample text ships with the runtime)."
)


def sample_data() -> Path:
    """The shipped sample text (the tiny preset's corpus)."""
    return Path(str(resources.files("gemma_runtime") / "data" / "sample.txt"))


# The flags' defaults when no --config is given; with --config only the flags given override the file.
DEFAULTS: dict[str, Any] = {
    "variant": "tiny",
    "steps": 100,
    "batch_size": 8,
    "seq_len": 128,
    "learning_rate": 3e-3,
    "warmup_steps": 10,
    "precision": "f32",
    "mesh": "1,-1,1",
    "checkpoint_every": 100,
    "host": "127.0.0.1",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="a TrainConfig YAML file (what the operator writes); flags override it"
    )
    parser.add_argument("--variant", help="model preset (default tiny)")
    parser.add_argument(
        "--checkpoint", help="start from this checkpoint (fine-tuning); default: random weights"
    )
    parser.add_argument(
        "--tokenizer", help="tokenizer.model or tokenizer.json (default: beside the checkpoint)"
    )
    parser.add_argument(
        "--data", type=Path, help="a .txt/.jsonl file or folder (default: the shipped sample text)"
    )
    parser.add_argument("--data-format", choices=["text", "jsonl"], help="default: from the file suffix")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 100)")
    parser.add_argument("--batch-size", type=int, help="global batch, sequences (default 8)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default 128)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default 3e-3)")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 10)")
    parser.add_argument("--precision", choices=["f32", "bf16"], help="compute dtype (default f32)")
    parser.add_argument(
        "--lora-rank", type=int, help="train LoRA adapters of this rank instead of all weights"
    )
    parser.add_argument(
        "--mesh", help="data,fsdp,tensor[,expert] (-1 fills one of the first three; default 1,-1,1)"
    )
    parser.add_argument("--output", type=Path, help="checkpoint folder (resumes from it); default: none")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    parser.add_argument("--metrics-file", type=Path, help="append one JSON object per logged step")
    parser.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    parser.add_argument("--host", help="progress endpoint address (default 127.0.0.1, or the config's)")
    parser.add_argument("--port", type=int, help="progress endpoint port (default: none by hand, config's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, log lines only")
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="keep the compiled step in DIR (JAX's persistent cache): a restart loads it",
    )
    parser.add_argument(
        "--message-file",
        type=Path,
        metavar="FILE",
        help="write the final /progress document here when the run ends (the pod's /dev/termination-log)",
    )


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The config file (if any) with the flags given laid over it, else the flags with their defaults;
    raises ConfigError naming the problem."""
    if args.config is not None:
        base = load_train_config(args.config).model_dump()
        given = vars(args)
    else:
        base = {"name": "cli", "model": {}, "data": {}, "training": {"remat": "none"}, "port": 0}
        given = {**vars(args), **{k: v for k, v in DEFAULTS.items() if getattr(args, k) is None}}
        given["data"] = args.data or sample_data()
    try:
        document = _merge(base, _flags_document(given))
        return TrainConfig.model_validate(document)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _flags_document(flags: dict[str, Any]) -> dict[str, Any]:
    """The config fields the flags set (None: not given)."""
    data_path = flags.get("data")
    data_format = flags.get("data_format")
    if data_path is not None and data_format is None:
        data_format = "jsonl" if Path(data_path).suffix in (".jsonl", ".json") else "text"
    mesh: dict[str, int] | None = None
    if flags.get("mesh") is not None:
        mesh = train_mesh_flag(flags["mesh"])
    output = flags.get("output")
    return {
        "model": {
            "variant": flags.get("variant"),
            "checkpoint": flags.get("checkpoint"),
            "tokenizer": flags.get("tokenizer"),
        },
        "data": {"path": None if data_path is None else str(data_path), "format": data_format},
        "training": {
            "steps": flags.get("steps"),
            "global_batch_size": flags.get("batch_size"),
            "sequence_length": flags.get("seq_len"),
            "learning_rate": flags.get("learning_rate"),
            "warmup_steps": flags.get("warmup_steps"),
            "precision": flags.get("precision"),
            "lora": {"rank": flags["lora_rank"]} if flags.get("lora_rank") else None,
        },
        "mesh": mesh,
        "checkpoints": {
            "directory": None if output is None else str(output),
            "interval_steps": flags.get("checkpoint_every"),
        },
        "host": flags.get("host"),
        "port": flags.get("port"),
        "compilation_cache": flags.get("compilation_cache"),
    }


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every non-None value of ``overrides`` laid over it, section by section."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict | None):
            merged[key] = _merge(merged.get(key) or {}, value)
        elif value is not None:
            merged[key] = value
    return merged


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
        cluster = distributed(os.environ)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from gemma_runtime.train import data, loop, setup

    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO

    from gemma_runtime.devices import ACCELERATOR_MISSING, DeviceError

    setup.initialize_distributed(cluster)
    try:
        setup.check_devices(os.environ)
    except DeviceError as err:  # never train on the CPU in place of a missing TPU or GPU
        print(f"error: {err}", file=sys.stderr)
        write_message(args.message_file, {"reason": ACCELERATOR_MISSING, "error": str(err)})
        return 1
    options = loop.Options(
        metrics_file=args.metrics_file,
        log_every=args.log_every,
        show_bar=False if args.no_progress else None,
        message_file=args.message_file,
    )
    try:
        result = loop.run(config, options)
    except (setup.TrainError, data.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return INTERRUPTED_EXIT_CODE if result.interrupted else 0
