"""`gemma-operator`: parse the command line and call one function per subcommand."""

from __future__ import annotations

import argparse
import os
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


def _render(args: argparse.Namespace) -> int:
    from gemma_operator.offline import render_file

    text, problems = render_file(Path(args.file), namespace=args.namespace)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    sys.stdout.write(text)
    return 1 if problems else 0


def _run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before kopf and the kubernetes client are imported: both read it (kopf's login, our client).
        os.environ["KUBECONFIG"] = args.kubeconfig
    import threading

    import kopf

    import gemma_operator.handlers  # noqa: F401 - registers the handlers
    from gemma_operator.config import Settings
    from gemma_operator.handlers import watchdog

    settings = Settings.from_env()
    namespaces = args.namespace or list(settings.namespaces)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL)
    health = (
        f"http://{settings.bind_address}:{settings.health_port}/healthz" if settings.health_port else None
    )
    stop = threading.Event()
    failures = watchdog.install(stop)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=health,
        stop_flag=stop,
    )
    if failures.failed:
        print(f"error: stopped: kopf gave up watching {', '.join(failures.failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-operator",
        description="Kubernetes operator for GemmaServer and GemmaTraining resources.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)
    render = commands.add_parser("render", help="print the children a resource file would get, offline")
    render.add_argument(
        "-f", "--file", required=True, help="YAML file with GemmaServer/GemmaTraining documents"
    )
    render.add_argument("-n", "--namespace", default="default", help="namespace to render into")
    render.set_defaults(func=_render)
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
