"""`gemma-operator`: parse the command line and call one function per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gemma_operator import __version__


def _crds(args: argparse.Namespace) -> int:
    from gemma_operator.api import crdgen

    if args.output_dir is None:
        sys.stdout.write("---\n".join(crdgen.render_crds().values()))
        return 0
    for path in crdgen.write_crds(Path(args.output_dir)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-operator",
        description="Kubernetes operator for GemmaServer and GemmaTraining resources.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    crds = commands.add_parser("crds", help="print or write the CustomResourceDefinitions")
    crds.add_argument("-o", "--output-dir", help="write one YAML file per CRD into this folder")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result
