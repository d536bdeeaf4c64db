"""`gemma-operator`: parse the command line and call one function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gemma_operator import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-operator",
        description="Kubernetes operator for GemmaServer and GemmaTraining resources.",
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
