"""The e2e tier's kind cluster (pytest-kind's KindCluster), its images and its diagnostics.

kind, kubectl and helm: those on PATH, else pytest-kind's pinned kind (downloaded) and the cluster
tier's pinned kubectl and helm. Every file lives under the test's temporary folder, none in the repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pytest_kind import KindCluster  # type: ignore[import-untyped]

from tests.api_cases import REPO
from tests.cluster.chart.helm import Helm
from tests.unit.packaging.generate import CHART, NAMESPACE, RELEASE

CONFIG = Path(__file__).with_name("kind-config.yaml")
OPERATOR_IMAGE = "gemma-operator:e2e"
RUNTIME_IMAGE = "gemma-runtime:e2e"
IMAGES = {"operator": OPERATOR_IMAGE, "runtime": RUNTIME_IMAGE}


def tool(name: str) -> Path:
    """``name`` (kubectl, helm) from PATH, else the cluster tier's pinned build."""
    found = shutil.which(name)
    if found:
        return Path(found)
    from tests.cluster.harness.binaries import ensure_binaries

    return ensure_binaries() / name


def create(name: str, workdir: Path, kubectl: Path) -> KindCluster:
    kind = shutil.which("kind")
    cluster = KindCluster(
        name,
        kubeconfig=workdir / "kubeconfig",
        image=os.environ.get("GEMMA_KIND_IMAGE"),  # e.g. kindest/node:v1.33.1; kind's default otherwise
        kind_path=Path(kind) if kind else workdir / "kind",
        kubectl_path=kubectl,
    )
    cluster.create(CONFIG)
    return cluster


def build_and_load(cluster: KindCluster) -> None:
    """Build both images from the repository's Dockerfile (runtime with CPU JAX) and load them."""
    for target, tag in IMAGES.items():
        subprocess.run(
            ["docker", "build", "--target", target, "--build-arg", "JAX_VARIANT=cpu", "-t", tag, str(REPO)],
            check=True,
            timeout=1800,
        )
        cluster.load_docker_image(tag)


def diagnostics(cluster: KindCluster, namespaces: list[str]) -> str:
    """What a failed e2e run needs: events, `kubectl describe` and the logs of every pod."""
    parts: list[str] = []
    for namespace in namespaces:
        for args in (
            ["get", "all,gemmaservers,gemmatrainings", "-o", "wide"],
            ["get", "events", "--sort-by=.lastTimestamp"],
            ["describe", "pods"],
            ["logs", "--all-containers", "--prefix", "--tail=200", "-l", "app.kubernetes.io/managed-by"],
        ):
            try:
                parts.append(
                    f"$ kubectl -n {namespace} {' '.join(args)}\n" + cluster.kubectl("-n", namespace, *args)
                )
            except subprocess.CalledProcessError as err:
                parts.append(f"$ kubectl -n {namespace} {' '.join(args)} failed: {err}")
    return "\n".join(parts)


@contextlib.contextmanager
def collecting(cluster: KindCluster, namespaces: list[str], folder: Path) -> Iterator[None]:
    """On failure, write the diagnostics to ``folder`` and print where, then fail as before."""
    try:
        yield
    except BaseException:
        report = folder / "diagnostics.txt"
        report.write_text(diagnostics(cluster, namespaces))
        print(f"\n[e2e] diagnostics in {report}", file=sys.stderr)
        raise


def install_chart(helm: Helm, *settings: str) -> None:
    """`helm install` the chart with the images :func:`build_and_load` made, waiting for the operator."""
    repository, _, tag = OPERATOR_IMAGE.partition(":")
    runtime_repository, _, runtime_tag = RUNTIME_IMAGE.partition(":")
    values = [
        f"image.repository={repository}",
        f"image.tag={tag}",
        f"runtime.image.repository={runtime_repository}",
        f"runtime.image.tag={runtime_tag}",
        *settings,
    ]
    flags = [arg for value in values for arg in ("--set", value)]
    helm.run(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", *flags,
        "--wait", "--timeout", "5m", timeout=360,
    )  # fmt: skip
