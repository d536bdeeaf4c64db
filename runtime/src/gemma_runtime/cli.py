"""`gemma-runtime`: parse the command line and call one function per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gemma_runtime import __version__
from gemma_runtime.config import CheckpointFormat


def _serve(args: argparse.Namespace) -> int:
    from gemma_runtime.serve import command

    return command.run(args)


def _convert(args: argparse.Namespace) -> int:
    from gemma_runtime.checkpoint import CheckpointError, Format, load_model, store

    started = time.monotonic()
    try:
        source_format = Format(args.format) if args.format else None
        model = load_model(Path(args.checkpoint), variant=args.variant, format=source_format)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    output = store.save(model, Path(args.output))
    seconds = time.monotonic() - started
    billions = model.config.param_count() / 1e9
    print(f"wrote {output} ({model.config.name}, {billions:.3f} B parameters) in {seconds:.1f} s")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from gemma_runtime import fetch

    return fetch.run(args)


def _train(args: argparse.Namespace) -> int:
    from gemma_runtime.train import command

    return command.run(args)


def _plan(args: argparse.Namespace) -> int:
    from gemma_runtime.plan import command

    return command.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-runtime",
        description="JAX runtime for Gemma: train and serve on TPU, GPU or CPU.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from gemma_runtime.serve import command as serve_command  # JAX-free until a server starts

    serve = commands.add_parser(
        "serve",
        help="serve a model behind an OpenAI-compatible HTTP API",
        description=serve_command.DESCRIPTION,
    )
    serve_command.add_arguments(serve)
    serve.set_defaults(func=_serve)
    convert = commands.add_parser(
        "convert",
        help="convert a Hugging Face or official Gemma checkpoint to the runtime's Orbax format",
        description="Read a Hugging Face safetensors directory (config.json defines the model) or an "
        "official Gemma JAX Orbax checkpoint (give --variant) and write the runtime's own format.",
    )
    convert.add_argument("checkpoint", help="source checkpoint directory")
    convert.add_argument("-o", "--output", required=True, help="output directory")
    convert.add_argument(
        "--format", choices=[f.value for f in CheckpointFormat], help="source format (default: detected)"
    )
    convert.add_argument("--variant", help="model variant for official Orbax checkpoints, e.g. gemma-2b")
    convert.set_defaults(func=_convert)
    from gemma_runtime import fetch as fetch_command  # JAX-free: cheap at start-up

    fetch = commands.add_parser(
        "fetch",
        help="download a checkpoint from the Hugging Face Hub into a folder (the operator's init container)",
        description=fetch_command.DESCRIPTION,
    )
    fetch_command.add_arguments(fetch)
    fetch.set_defaults(func=_fetch)
    from gemma_runtime.train import command as train_command  # JAX-free until a run starts

    train = commands.add_parser(
        "train",
        help="train or fine-tune (sharded, resumable, with progress)",
        description=train_command.DESCRIPTION,
    )
    train_command.add_arguments(train)
    train.set_defaults(func=_train)
    from gemma_runtime.plan import command as plan_command  # JAX-free until a plan starts

    plan = commands.add_parser(
        "plan",
        help="compile the serving or training step for a TPU slice: memory per chip, fit, FLOPs",
        description=plan_command.DESCRIPTION,
    )
    plan_command.add_arguments(plan)
    plan.set_defaults(func=_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=log_format)
    result: int = args.func(args)
    return result
