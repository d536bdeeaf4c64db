"""The README's cluster commands, run as written against the real control plane: the GKE quickstart
(helm install of the chart with the registry settings, the token Secret, the first GemmaServer, waiting
for Ready) and the API section's `kubectl apply -f crds/`, `kubectl get gemma` and `kubectl explain`.

kwok plays the TPU host, so the chart's operator pod runs nothing; the session's operator process
reconciles. The port-forward and curl of the quickstart need real pods (see ``tests/readme.py``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import readme
from tests.cluster.harness.control_plane import ADMIN_USER, LocalCluster
from tests.cluster.harness.operator import OperatorProcess, operator_trouble
from tests.unit.packaging.generate import NAMESPACE, RELEASE


class Shell:
    """Runs README commands with bash in the repository, the cluster's kubectl and helm on PATH, and a
    kubeconfig whose current namespace is the test's."""

    def __init__(self, cluster: LocalCluster, namespace: str, home: Path) -> None:
        kubeconfig = cluster.write_kubeconfig(
            home / "kubeconfig", ADMIN_USER, cluster.admin_token, namespace=namespace
        )
        self.env = {
            "PATH": f"{Path(cluster.binary('kubectl')).parent}:{os.environ['PATH']}",
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
            "HF_TOKEN": "hf_readme_test",
        }

    def run(self, command: str, timeout: float = 240, check: bool = True) -> str:
        return readme.run(command, self.env, timeout, check)


@pytest.fixture
def shell(crds: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Shell]:
    shell = Shell(crds, namespace, tmp_path)
    yield shell
    # The quickstart installs the chart into gemma-system; later chart tests install it there themselves.
    shell.run(f"helm uninstall {RELEASE} -n {NAMESPACE} --wait --ignore-not-found", timeout=180, check=False)
    crds.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s", "--ignore-not-found")


def test_the_gke_quickstart_runs_as_written(shell: Shell, running_operator: OperatorProcess) -> None:
    export = readme.find("export REGISTRY=")
    registry = export.removeprefix("export REGISTRY=")
    helm = readme.find("helm install gemma-operator charts/gemma-operator")
    out = shell.run(f"{export}\n{helm}")
    assert "STATUS: deployed" in out
    image = shell.run(f"kubectl -n {NAMESPACE} get deploy {RELEASE} -o jsonpath='{{..image}}'")
    assert image == f"{registry}/gemma-operator:0.1.0"
    config = shell.run(f"kubectl -n {NAMESPACE} get configmap -o yaml")
    assert f"{registry}/gemma-runtime:0.1.0" in config

    shell.run(readme.find("kubectl create secret generic hf-token"))
    assert "gemma2-9b-it created" in shell.run(readme.find("kubectl apply -f manifests/gemma-server.yaml"))
    # The README waits up to 30 minutes (a real download and load); here the fake host is ready at once.
    try:
        waited = shell.run(readme.find("kubectl wait gemmaserver/gemma2-9b-it"), timeout=300)
    except subprocess.TimeoutExpired:
        status = shell.run("kubectl get gemmaserver gemma2-9b-it -o jsonpath='{.status}'", check=False)
        raise AssertionError(
            f"not Ready in 300 s; status {status}\n{operator_trouble(running_operator.log)}"
        ) from None
    assert "condition met" in waited

    table = shell.run(readme.find("kubectl get gemma"))
    row = next(line for line in table.splitlines() if "/gemma2-9b-it " in line)  # kind/name with two kinds
    assert "Ready" in row
    assert "v5e" in row


def test_the_api_section_commands_run_as_written(shell: Shell) -> None:
    assert "gemmaservers.gemma.ai" in shell.run(readme.find("kubectl apply -f crds/"))
    explained = shell.run(readme.find("kubectl explain gemmaserver.spec.accelerator"))
    assert "topology" in explained
    assert "FIELDS" in explained
