"""The chart with operator.watchNamespaces: the operator, as the installed ServiceAccount, reconciles a
sample in its watched namespace with nothing but the Roles there (plus CRD and namespace reads), with no
request denied, and may not touch any other namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.api_cases import SAMPLE_FILES
from tests.cluster.chart import samples
from tests.cluster.chart.helm import Helm
from tests.cluster.chart.install import RESTRICTED, log_since_start, start_operator
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess
from tests.unit.packaging.generate import CHART

RELEASE, HOME = "scoped", "gemma-scoped"
WATCHED, OTHER = "scoped-work", "scoped-other"
ACCOUNT = f"{RELEASE}-gemma-operator"
USER = f"system:serviceaccount:{HOME}:{ACCOUNT}"
TINY = next(p for p in SAMPLE_FILES if p.stem == "server-tiny-cpu")


@pytest.fixture(scope="module")
def scoped(
    crds: LocalCluster,
    helm_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
    api_client: client.ApiClient,
) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("scoped")
    helm = Helm(helm_binary, workdir / "helm-home", kubeconfig=crds.kubeconfig)
    operator: OperatorProcess | None = None
    try:
        for namespace in (HOME, WATCHED, OTHER):
            crds.kubectl("create", "namespace", namespace)
            crds.kubectl("label", "namespace", namespace, RESTRICTED)
        helm.run(
            "install", RELEASE, str(CHART), "-n", HOME, "--set", f"operator.watchNamespaces={{{WATCHED}}}",
            "--set", "rbac.aggregateToDefaultRoles=false", "--wait", "--timeout", "180s",
        )  # fmt: skip
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=3600))
        token = client.CoreV1Api(api_client).create_namespaced_service_account_token(ACCOUNT, HOME, request)
        kubeconfig = crds.write_kubeconfig(workdir / "scoped.kubeconfig", USER, token.status.token, HOME)
        operator = OperatorProcess(crds, kubeconfig=kubeconfig)
        start_operator(operator, namespaces=WATCHED)
        yield operator
    finally:
        if operator is not None:
            operator.stop()
        helm.run("uninstall", RELEASE, "-n", HOME, "--wait", "--timeout", "120s", "--ignore-not-found")
        for namespace in (HOME, WATCHED, OTHER):
            crds.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def test_the_watched_namespace_is_reconciled_with_roles_alone(
    scoped: OperatorProcess, crds: LocalCluster
) -> None:
    doc = samples.apply(crds, WATCHED, TINY)
    obj = samples.wait_settled(crds, WATCHED, doc, "Ready")
    assert obj["status"]["readyReplicas"] == 1
    log = log_since_start(scoped)
    assert f'User "{USER}" cannot' not in log, log[-3000:]
    assert "Not enough permissions" not in log, log[-3000:]


def test_other_namespaces_are_neither_watched_nor_writable(
    scoped: OperatorProcess, crds: LocalCluster
) -> None:
    samples.apply(crds, WATCHED, TINY)
    doc = samples.apply(crds, OTHER, TINY)
    # A change in the watched namespace, made after, is served: the operator was at work meanwhile.
    crds.kubectl(
        "-n", WATCHED, "patch", "gemmaserver", "tiny", "--type=merge", "-p", '{"spec":{"replicas":2}}'
    )
    assert samples.wait_settled(crds, WATCHED, doc, "Ready")["status"]["readyReplicas"] == 2
    assert "status" not in samples.get(crds, OTHER, doc)
    for verb, resource in (("create", "deployments"), ("list", "pods"), ("patch", "gemmaservers")):
        group = {"deployments": "apps", "gemmaservers": "gemma.ai"}.get(resource, "")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": USER,
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "namespace": OTHER,
                },
            },
        }
        answer = crds.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        assert not answer["status"].get("allowed"), (verb, resource)
