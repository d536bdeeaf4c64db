"""`python -m tests.cluster.harness binaries | up | demo | images` (what `make cluster-binaries`,
`make cluster`, `make demo` and `make docker-build` run)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path

from tests.cluster.harness import demo, images
from tests.cluster.harness.binaries import BuildError, ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.parts import build_all

STATE_DIR = Path(".cluster")


def _up() -> int:
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    with LocalCluster(workdir=STATE_DIR.resolve()) as cluster:
        print(f"\nControl plane ready in {cluster.timings['total']:.1f} s. In another shell:\n")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  export PATH={cluster.bin_dir}:$PATH\n")
        print(cluster.kubectl("get", "nodes", "-L", demo.POOL_COLUMNS))
        print("Logs are in", cluster.workdir / "logs", "- press Ctrl-C to stop the cluster.", flush=True)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.harness")
    parser.add_argument("command", choices=["binaries", "up", "demo", "images"])
    parser.add_argument("--operator-image", default=images.OPERATOR_IMAGE, help="images: operator tag")
    parser.add_argument("--runtime-image", default=images.RUNTIME_IMAGE, help="images: runtime tag")
    parser.add_argument("--jax-variant", default="cpu", help="images: the runtime's JAX (cpu, cuda12, tpu)")
    args = parser.parse_args(argv)
    try:
        if args.command == "binaries":
            failed = build_all()  # logs every part on stderr
            for what, why in failed.items():
                print(f"error: {what}: {why}", file=sys.stderr)
            if failed:
                return 1
            print(ensure_binaries())  # stdout: the control plane's folder (the Makefile's helm is there)
            return 0
        if args.command == "images":
            return images.main(args.operator_image, args.runtime_image, args.jax_variant)
        return _up() if args.command == "up" else demo.run()
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
