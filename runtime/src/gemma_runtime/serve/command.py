"""The ``gemma-runtime serve`` command line: a config file (what the operator renders), or flags as other
servers have them for people starting it by hand. JAX-free until a server starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gemma_runtime.config import ConfigError, ServeConfig, load_serve_config, serve_mesh_flag
from gemma_runtime.endpoints import write_message

DESCRIPTION = (
    "Serve one model behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
    "/v1/models) with /healthz, /readyz, /metrics and /stats. Give --config FILE (the operator's "
    "runtime.yaml), or --checkpoint DIR and/or --variant NAME (no checkpoint: random weights)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="runtime config (YAML); the flags below override it")
    parser.add_argument("--checkpoint", help="checkpoint directory (Hugging Face, official Orbax or ours)")
    parser.add_argument(
        "--tokenizer", help="tokenizer.model or tokenizer.json (default: beside the checkpoint)"
    )
    parser.add_argument("--variant", help="model preset, e.g. gemma2-2b or tiny (needed for official Orbax)")
    parser.add_argument("--served-model-name", help="the model id clients send (default: the variant)")
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--max-batch-size", type=int, help="decode slots (default 32)")
    parser.add_argument("--max-sequence-length", type=int, help="prompt plus completion tokens")
    parser.add_argument("--max-prefill-length", type=int, help="prompt tokens per engine step")
    parser.add_argument("--max-queued-requests", type=int, help="waiting requests before 429")
    parser.add_argument("--quantization", choices=["none", "int8"], help="weight quantization")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], help="compute dtype")
    parser.add_argument(
        "--accelerator",
        help="plan for this host instead of the devices found: TYPE:TOPOLOGY for a TPU (v5e:2x4), "
        "TYPE:COUNT for GPUs (nvidia-l4:2), or cpu",
    )
    parser.add_argument(
        "--mesh",
        help="DATAxTENSOR, e.g. 2x4: data replicas over the slots, each over tensor chips; or "
        "DATAxEXPERTxTENSOR for a mixture of experts, its experts split over EXPERT chips",
    )
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="keep compiled step programs in DIR (JAX's persistent cache): a restart loads them",
    )
    parser.add_argument(
        "--message-file",
        type=Path,
        metavar="FILE",
        help="write why the server could not start here (the pod's /dev/termination-log)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the memory plan (per chip: weights, KV cache, workspace) and exit: 0 fits, 2 not",
    )


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The config file (if any) with the flags laid over it; raises ConfigError naming the problem."""
    base = load_serve_config(args.config).model_dump() if args.config else {}
    model = dict(base.get("model") or {})
    for field in ("checkpoint", "tokenizer", "variant"):
        if getattr(args, field):
            model[field] = getattr(args, field)
    if "variant" not in model and model.get("checkpoint"):
        model["variant"] = _variant_of(Path(model["checkpoint"]))
    if "variant" not in model:
        raise ConfigError("give --config, --checkpoint or --variant")
    flat = {
        "host": args.host,
        "port": args.port,
        "max_batch_size": args.max_batch_size,
        "max_sequence_length": args.max_sequence_length,
        "max_prefill_length": args.max_prefill_length,
        "max_queued_requests": args.max_queued_requests,
        "quantization": args.quantization,
        "dtype": args.dtype,
        "served_model_name": args.served_model_name,
        "compilation_cache": getattr(args, "compilation_cache", None),
    }
    if args.accelerator:
        flat["accelerator"] = _accelerator(args.accelerator)
    if args.mesh:
        flat["mesh"] = serve_mesh_flag(args.mesh)
    document = {**base, **{k: v for k, v in flat.items() if v is not None}, "model": model}
    document.setdefault("served_model_name", model["variant"])
    if args.max_sequence_length and not args.max_prefill_length and not args.config:
        document["max_prefill_length"] = min(args.max_sequence_length, 1024)
    try:
        return ServeConfig.model_validate(document)
    except ValidationError as err:
        raise ConfigError(str(err)) from err


def _accelerator(text: str) -> dict[str, Any]:
    """TYPE[:TOPOLOGY or COUNT] -> the config's accelerator."""
    kind, _, detail = text.partition(":")
    if not detail:
        return {"type": kind}
    if detail.isdigit():
        return {"type": kind, "count": int(detail)}
    return {"type": kind, "topology": detail}


def _variant_of(checkpoint: Path) -> str:
    """A name for a checkpoint that carries its own config (the folder's name)."""
    return checkpoint.resolve().name or "model"


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from gemma_runtime.devices import ACCELERATOR_MISSING, DeviceError
    from gemma_runtime.serve.plan import plan_for_host

    # Before anything loads: a model that cannot fit fails now, with the numbers and what would fit, and
    # a pod whose TPU or GPU is missing fails instead of serving on the CPU.
    try:
        plan = plan_for_host(config, find_devices=not (args.dry_run and config.accelerator))
    except DeviceError as err:
        return _refuse(args, ACCELERATOR_MISSING, err, code=1)
    except ValueError as err:  # memory.PlanError, or an accelerator the table does not have
        return _refuse(args, "ServingPlanFailed", err, code=2)
    if args.dry_run:
        print(plan.summary())
        return 0
    from gemma_runtime.serve.launch import checked_tokenizer, serve

    try:
        tokenizer = checked_tokenizer(config)
    except (OSError, ValueError) as err:  # no tokenizer file, an unreadable one, or the wrong one
        return _refuse(args, "TokenizerFailed", err, code=2)
    serve(config, plan, tokenizer)
    return 0


def _refuse(args: argparse.Namespace, reason: str, err: Exception, *, code: int) -> int:
    """Say why the server cannot start, on stderr and in the message file the operator reads."""
    print(f"error: {err}", file=sys.stderr)
    write_message(getattr(args, "message_file", None), {"reason": reason, "error": str(err)})
    return code
