"""Install the operator into the test control plane the two ways a user does (`helm install` of the
chart, `kubectl apply -f manifests/install.yaml`), mint a token of its ServiceAccount with the
TokenRequest API, and uninstall again (leaving the CRDs, as both ways do)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.cluster.chart.helm import Helm
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess
from tests.cluster.harness.wait import wait_for
from tests.unit.packaging.generate import CHART, INSTALL, NAMESPACE, RELEASE

ACCOUNT = "gemma-operator"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@dataclasses.dataclass
class Installation:
    method: str  # "helm" or "kubectl"
    cluster: LocalCluster
    helm: Helm
    workdir: Path

    def install(self) -> None:
        if self.method == "helm":
            # Created first with the restricted label, so the operator pod is admitted under it.
            self.cluster.kubectl("create", "namespace", NAMESPACE)
            self.cluster.kubectl("label", "namespace", NAMESPACE, RESTRICTED)
            self.helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout", "180s")
        else:
            self.cluster.kubectl("apply", "-f", str(INSTALL))
            self.cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deploy/{RELEASE}", "--timeout=180s")

    def uninstall(self) -> None:
        """Remove what :meth:`install` made (also after a partial install)."""
        if self.method == "helm":
            self.helm.run(
                "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s", "--ignore-not-found"
            )
        else:
            # Everything but the CRDs: deleting those would delete every GemmaServer in the cluster.
            kept = [
                doc
                for doc in yaml.safe_load_all(INSTALL.read_text())
                if doc and doc["kind"] not in ("CustomResourceDefinition", "Namespace")
            ]
            path = self.workdir / "install-without-crds.yaml"
            path.write_text(yaml.safe_dump_all(kept))
            self.cluster.kubectl("delete", "-f", str(path), "--wait=true", "--ignore-not-found")
        self.cluster.kubectl(
            "delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", "--ignore-not-found"
        )

    def leftovers(self) -> list[str]:
        """Objects of the release still in the cluster after uninstall (CRDs excepted)."""
        selector = f"app.kubernetes.io/instance={RELEASE}"
        out = self.cluster.kubectl(
            "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name", check=False
        )
        gone = wait_for(
            lambda: (
                not self.cluster.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name")
            ),
            120,
            f"namespace {NAMESPACE} to be deleted",
        )
        return out.split() if gone else ["namespace/" + NAMESPACE]

    def token_kubeconfig(self, api: client.ApiClient) -> Path:
        """A kubeconfig holding a TokenRequest token of the operator's ServiceAccount."""
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=3600))
        issued = client.CoreV1Api(api).create_namespaced_service_account_token(ACCOUNT, NAMESPACE, request)
        path = self.workdir / f"{self.method}-operator.kubeconfig"
        return self.cluster.write_kubeconfig(path, USER, issued.status.token, NAMESPACE)

    def objects(self) -> list[str]:
        """kind/name of what the installation made in its namespace and cluster-wide."""
        selector = f"app.kubernetes.io/instance={RELEASE}"
        names = self.cluster.kubectl(
            "get",
            "serviceaccounts,configmaps,deployments,clusterroles,clusterrolebindings",
            "-A",
            "-l",
            selector,
            "-o",
            "json",
        )
        return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in json.loads(names)["items"])


def start_operator(operator: OperatorProcess, **env: str) -> None:
    """Start ``operator`` with extra GEMMA_OPERATOR_* ``env`` (e.g. its own field manager, so the
    children show afterwards which operator wrote them); a start that fails stops what it started."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(f"GEMMA_OPERATOR_{name.upper()}", value)
        try:
            operator.start()
        except BaseException:
            operator.stop()
            raise


def log_since_start(operator: OperatorProcess) -> str:
    """The operator's log since its latest start."""
    return operator.log.read_text(errors="replace").rsplit(f"===== start {operator.starts} =====", 1)[-1]
