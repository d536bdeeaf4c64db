"""Fixtures for the cluster tier: one real control plane per session, a fresh namespace per test.

Without binaries and without Go the tier skips with the reason, unless ``GEMMA_REQUIRE_CLUSTER=1``
(CI sets it), where a missing control plane is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.api_cases import REPO
from tests.cluster.harness.binaries import ensure_binaries
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.required import required


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """Write to the real terminal, past pytest's output capture, so the figures land in the CI log."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    bin_dir = required("control plane", ensure_binaries)
    with LocalCluster(bin_dir=bin_dir) as local:
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in local.timings.items())
        memory = local.memory_mib()
        _report(request, f"\n[cluster] started: {steps}")
        _report(request, f"[cluster] memory after start: {sum(memory.values()):.0f} MiB {memory}")
        yield local
        memory = local.memory_mib()
        _report(request, f"\n[cluster] memory at end of session: {sum(memory.values()):.0f} MiB {memory}")


@pytest.fixture(scope="session")
def api_client(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> LocalCluster:
    """The generated CRDs, installed from crds/ and Established."""
    cluster.kubectl("apply", "--server-side", "--field-manager=gemma-tests", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/gemmaservers.gemma.ai", "crd/gemmatrainings.gemma.ai"
    )
    return cluster
