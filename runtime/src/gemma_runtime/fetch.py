"""`gemma-runtime fetch URI --to DIR`: download a checkpoint into a local folder.

The operator runs it as the init container of pods whose weights are on the Hugging Face Hub. The token
comes from an environment variable (the Secret's key, mapped by the operator), never from the command
line, so it shows in neither the pod spec's args nor ``ps``. It also copies ``gs://`` objects over Cloud
Storage's JSON API (credentials from the GKE metadata server, or none for an emulator named by
STORAGE_EMULATOR_HOST), for weights wanted on local disk rather than through the FUSE mount.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gemma_runtime.endpoints import write_message
from gemma_runtime.sources import DEFAULT_ENDPOINT, HfRef, SourceError, gcs, parse_hf_uri, snapshot, status
from gemma_runtime.sources.mirror import Progress, Snapshot

DESCRIPTION = (
    "Download a checkpoint (safetensors, config.json, tokenizer) into DIR, keeping files already there "
    "and verified. Handles hf://org/model[@revision] (the Hub's address can be changed with HF_ENDPOINT) "
    "and gs://bucket/path (STORAGE_EMULATOR_HOST names an emulator)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="hf://org/model[@revision] or gs://bucket/path")
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


def parse_uri(uri: str) -> HfRef | gcs.GcsRef:
    """The reference ``fetch`` downloads; a ValueError says which schemes it handles."""
    scheme, sep, _ = uri.partition("://")
    if scheme == "gs":
        return gcs.parse_gs_uri(uri)
    if sep and scheme != "hf":
        raise ValueError(
            f"{uri!r}: fetch handles hf:// and gs:// only; pvc:// is mounted as a volume by the operator "
            "and file:// is already local, so they need no fetch"
        )
    return parse_hf_uri(uri)


def _download(ref: HfRef | gcs.GcsRef, target: Path, token: str | None, progress: Progress) -> Snapshot:
    if isinstance(ref, gcs.GcsRef):
        endpoint, emulator = gcs.endpoint_from_env()
        credentials = None if emulator else gcs.metadata_token()
        return gcs.snapshot(ref, target, token=credentials, endpoint=endpoint, progress=progress)
    if token is None:
        logging.getLogger("gemma_runtime.sources").info("no token: downloading anonymously (public models)")
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return snapshot(ref, target, token=token, endpoint=endpoint, progress=progress)


def run(args: argparse.Namespace) -> int:
    """Download ``args.uri`` into ``args.to``; 0 on success, 1 with ``error: ...`` on stderr."""
    token_env: str = args.token_env
    token = (os.environ.get(token_env) or "").strip() or None
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
            result = _download(ref, args.to, token, state.progress)
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
        write_message(message_file, state.snapshot())
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        logger.setLevel(level)
    write_message(message_file, state.snapshot())
    rate = result.bytes_downloaded / 1e6 / max(result.seconds, 1e-6)
    print(
        f"fetched {ref} ({'generation' if isinstance(ref, gcs.GcsRef) else 'commit'} {result.commit[:12]}) "
        f"into {result.path}: "
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
