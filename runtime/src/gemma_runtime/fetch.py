"""`gemma-runtime fetch URI --to DIR`: download a checkpoint into a local folder.

The operator runs it as the init container of pods whose weights are on the Hugging Face Hub. The token
comes from an environment variable (the Secret's key, mapped by the operator), never from the command
line, so it shows in neither the pod spec's args nor ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gemma_runtime.sources import DEFAULT_ENDPOINT, HfRef, SourceError, parse_hf_uri, snapshot, status

DESCRIPTION = (
    "Download a checkpoint (safetensors, config.json, tokenizer) into DIR, keeping files already there "
    "and verified. Handles hf://org/model[@revision]; the Hub's address can be changed with HF_ENDPOINT."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="hf://org/model[@revision]")
    parser.add_argument("--to", required=True, type=Path, metavar="DIR", help="target folder (created)")
    parser.add_argument(
        "--token-env",
        default="HF_TOKEN",
        metavar="NAME",
        help="environment variable holding the access token (default HF_TOKEN)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines: the summary and errors")
    parser.add_argument(
        "--status-port",
        type=int,
        metavar="PORT",
        help=f"serve progress as JSON at GET {status.PATH} on this port while fetching (for the operator)",
    )
    parser.add_argument(
        "--status-host", default="0.0.0.0", metavar="HOST", help="address for --status-port (default all)"
    )
    parser.add_argument(
        "--message-file",
        type=Path,
        metavar="FILE",
        help="write the outcome as one JSON line here when done (the pod's /dev/termination-log)",
    )


def parse_uri(uri: str) -> HfRef:
    """The reference ``fetch`` downloads; a ValueError says which schemes it handles."""
    scheme, sep, _ = uri.partition("://")
    if sep and scheme != "hf":
        raise ValueError(
            f"{uri!r}: fetch handles hf:// only; gs:// and pvc:// are mounted as volumes by the operator "
            "and file:// is already local, so they need no fetch"
        )
    return parse_hf_uri(uri)


def run(args: argparse.Namespace) -> int:
    """Download ``args.uri`` into ``args.to``; 0 on success, 1 with ``error: ...`` on stderr."""
    token_env: str = args.token_env
    token = (os.environ.get(token_env) or "").strip() or None
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    logger = logging.getLogger("gemma_runtime.sources")
    level = logger.level
    if args.quiet:
        logger.setLevel(logging.WARNING)
    state = status.FetchStatus(args.uri)
    message_file: Path | None = getattr(args, "message_file", None)
    try:
        with status.serving(
            state, getattr(args, "status_host", "0.0.0.0"), getattr(args, "status_port", None)
        ):
            ref = parse_uri(args.uri)
            if token is None:
                logger.info("no token in $%s: downloading anonymously (public models only)", token_env)
            result = snapshot(ref, args.to, token=token, endpoint=endpoint, progress=state.progress)
            state.finish(
                state="done",
                bytes_done=result.bytes_downloaded,
                bytes_total=result.bytes_downloaded,
                commit=result.commit,
                downloaded=len(result.downloaded),
                skipped=len(result.skipped),
            )
    except (ValueError, SourceError) as err:
        state.finish(state="failed", error=str(err))
        status.write_message(message_file, state.snapshot())
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        logger.setLevel(level)
    status.write_message(message_file, state.snapshot())
    rate = result.bytes_downloaded / 1e6 / max(result.seconds, 1e-6)
    print(
        f"fetched {ref} (commit {result.commit[:12]}) into {result.path}: "
        f"{len(result.downloaded)} files downloaded, {len(result.skipped)} skipped, "
        f"{result.bytes_downloaded / 1e6:.1f} MB in {result.seconds:.1f} s ({rate:.1f} MB/s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gemma-runtime fetch", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)
