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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="a TrainConfig YAML file (other model/data flags are ignored)"
    )
    parser.add_argument("--variant", default="tiny", help="model preset (default tiny)")
    parser.add_argument(
        "--checkpoint", help="start from this checkpoint (fine-tuning); default: random weights"
    )
    parser.add_argument("--tokenizer", help="SentencePiece tokenizer.model (default: beside the checkpoint)")
    parser.add_argument(
        "--data", type=Path, help="a .txt/.jsonl file or folder (default: the shipped sample text)"
    )
    parser.add_argument("--data-format", choices=["text", "jsonl"], help="default: from the file suffix")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch, sequences (default 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    parser.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up steps (default 10)")
    parser.add_argument(
        "--precision", choices=["f32", "bf16"], default="f32", help="compute dtype (default f32)"
    )
    parser.add_argument(
        "--lora-rank", type=int, help="train LoRA adapters of this rank instead of all weights"
    )
    parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor (-1 fills; default 1,-1,1)")
    parser.add_argument("--output", type=Path, help="checkpoint folder (resumes from it); default: none")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--metrics-file", type=Path, help="append one JSON object per logged step")
    parser.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    parser.add_argument("--host", default="127.0.0.1", help="progress endpoint address (default 127.0.0.1)")
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
    if args.config is not None:
        config = load_train_config(args.config)
        update = {"port": args.port, "compilation_cache": getattr(args, "compilation_cache", None)}
        return config.model_copy(update={k: v for k, v in update.items() if v is not None})
    data = args.data or sample_data()
    fmt = args.data_format or ("jsonl" if data.suffix in (".jsonl", ".json") else "text")
    try:
        data_axis, fsdp, tensor = (int(v) for v in args.mesh.split(","))
    except ValueError:
        raise ConfigError(f"--mesh {args.mesh!r}: expected three integers data,fsdp,tensor") from None
    document: dict[str, Any] = {
        "name": "cli",
        "model": {"variant": args.variant, "checkpoint": args.checkpoint, "tokenizer": args.tokenizer},
        "data": {"path": str(data), "format": fmt},
        "training": {
            "steps": args.steps,
            "global_batch_size": args.batch_size,
            "sequence_length": args.seq_len,
            "learning_rate": args.learning_rate,
            "warmup_steps": args.warmup_steps,
            "precision": args.precision,
            "remat": "none",
            **({"lora": {"rank": args.lora_rank}} if args.lora_rank else {}),
        },
        "mesh": {"data": data_axis, "fsdp": fsdp, "tensor": tensor},
        "checkpoints": {
            "directory": str(args.output) if args.output else None,
            "interval_steps": args.checkpoint_every,
        },
        "host": args.host,
        "port": args.port or 0,
        "compilation_cache": getattr(args, "compilation_cache", None),
    }
    try:
        return TrainConfig.model_validate(document)
    except ValueError as err:
        raise ConfigError(str(err)) from None


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
