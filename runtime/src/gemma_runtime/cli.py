"""`gemma-runtime`: parse the command line and call one function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gemma_runtime import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-runtime",
        description="JAX runtime for Gemma: train and serve on TPU, GPU or CPU.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0
