"""The chart and manifests/install.yaml installed into the real, RBAC-enforcing control plane: the API
server accepts every object and admits the operator pod in a namespace enforcing the "restricted" Pod
Security Standard; the operator run with a TokenRequest token of the installed ServiceAccount reconciles
every sample, in a restricted namespace, to the same outcome as the operator with admin rights, with
no request denied; the account is denied everything it does not need (Secrets anywhere, Nodes,
exec, RBAC, CRD changes); Argo CD's health of each settled sample is what the Lua promises; uninstalling
leaves nothing behind but the CRDs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gemma_operator.k8s import ForbiddenError, connect
from tests.api_cases import SAMPLE_FILES, load
from tests.cluster.chart import samples
from tests.cluster.chart.helm import Helm
from tests.cluster.chart.install import RESTRICTED, USER, Installation, log_since_start, start_operator
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess
from tests.unit.packaging.argo_lua import health
from tests.unit.packaging.generate import NAMESPACE, RELEASE

ADMIN_MANAGER, SA_MANAGER = "gemma-operator-admin", "gemma-operator-sa"
HEALTH = {"Ready": "Healthy", "Running": "Progressing", "Failed": "Degraded"}


@pytest.fixture(scope="module")
def admin_outcomes(crds: LocalCluster) -> dict[str, dict[str, Any]]:
    """Every sample reconciled by the operator with admin rights, one at a time (the TPU pools hold
    one sample's pods at a time), in namespaces without Pod Security enforcement."""
    operator = OperatorProcess(crds)
    start_operator(operator, field_manager=ADMIN_MANAGER)
    outcomes: dict[str, dict[str, Any]] = {}
    try:
        for path in SAMPLE_FILES:
            namespace = f"admin-{path.stem}"[:63]
            crds.kubectl("create", "namespace", namespace)
            try:
                doc = samples.apply(crds, namespace, path)
                samples.wait_settled(crds, namespace, doc, samples.settled_phase(path))
                outcomes[path.stem] = samples.outcome(crds, namespace, doc)
            finally:
                crds.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    finally:
        operator.stop()
    return outcomes


@pytest.fixture(scope="module", params=["helm", "kubectl"])
def installed(
    request: pytest.FixtureRequest,
    crds: LocalCluster,
    helm_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    workdir = tmp_path_factory.mktemp(f"install-{request.param}")
    helm = Helm(helm_binary, workdir / "helm-home", kubeconfig=crds.kubeconfig)
    installation = Installation(request.param, crds, helm, workdir)
    try:
        installation.install()
    except BaseException:
        installation.uninstall()
        raise
    yield installation
    installation.uninstall()
    leftovers = installation.leftovers()
    assert not leftovers, f"{request.param} uninstall left {leftovers}"


@pytest.fixture(scope="module")
def restricted_operator(
    admin_outcomes: dict[str, dict[str, Any]], installed: Installation, api_client: client.ApiClient
) -> Iterator[OperatorProcess]:
    """The operator as the installed Deployment runs it: cluster-wide, as the installed ServiceAccount
    (started after the admin runs, so never two operators at once)."""
    operator = OperatorProcess(installed.cluster, kubeconfig=installed.token_kubeconfig(api_client))
    start_operator(operator, field_manager=SA_MANAGER)
    yield operator
    operator.stop()


@pytest.fixture
def restricted_namespace(namespace: str, crds: LocalCluster) -> str:
    crds.kubectl("label", "namespace", namespace, RESTRICTED)
    return namespace


def test_the_objects_are_accepted_and_the_operator_pod_is_admitted_as_restricted(
    installed: Installation,
) -> None:
    assert installed.objects() == sorted(
        [
            f"ClusterRole/{RELEASE}",
            f"ClusterRole/{RELEASE}-edit",
            f"ClusterRole/{RELEASE}-view",
            f"ClusterRoleBinding/{RELEASE}",
            f"ConfigMap/{RELEASE}-config",
            f"Deployment/{RELEASE}",
            f"ServiceAccount/{RELEASE}",
        ]
    )
    cluster = installed.cluster
    labels = json.loads(cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json"))["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = json.loads(
        cluster.kubectl(
            "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json"
        )
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    # A server-side dry run of the restricted label on the namespace warns about any pod that violates it.
    dry_run = subprocess.run(
        [
            *(cluster.binary("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "label", "--dry-run=server"),
            *("--overwrite", "namespace", NAMESPACE, RESTRICTED),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "violate" not in dry_run.stderr, dry_run.stderr
    if installed.method == "helm":
        info = installed.helm.status()["info"]
        assert info["status"] == "deployed"
        assert "It watches every namespace." in info["notes"]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_every_sample_reconciles_as_with_admin_rights(
    admin_outcomes: dict[str, dict[str, Any]],
    restricted_operator: OperatorProcess,
    restricted_namespace: str,
    crds: LocalCluster,
    path: Path,
) -> None:
    doc = samples.apply(crds, restricted_namespace, path)
    phase = samples.settled_phase(path)
    obj = samples.wait_settled(crds, restricted_namespace, doc, phase)
    assert samples.outcome(crds, restricted_namespace, doc) == admin_outcomes[path.stem]
    # The restricted namespace admitted every pod, and this operator, no other, wrote the children.
    if admin_outcomes[path.stem]["children"]:
        assert samples.pods(crds, restricted_namespace, doc)
        assert samples.managers(crds, restricted_namespace, doc) == {SA_MANAGER}
    log = log_since_start(restricted_operator)
    # RBAC's refusal names the user; other 403s (an Event into a namespace being deleted) are not RBAC.
    assert f'User "{USER}" cannot' not in log, log[-3000:]
    assert "Not enough permissions" not in log, log[-3000:]
    assert health(obj)[0] == HEALTH[phase]


def _allowed(cluster: LocalCluster, verb: str, resource: str, namespace: str | None) -> bool:
    """The API server's own answer (a SubjectAccessReview) for the installed ServiceAccount."""
    name, _, subresource = resource.partition("/")
    plural, _, group = name.partition(".")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource}
    if namespace:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": USER,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{NAMESPACE}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = cluster.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("get", "secrets", "default"),
        ("list", "secrets", None),
        ("list", "secrets", NAMESPACE),
        ("get", "nodes", None),
        ("create", "pods", "default"),
        ("create", "pods/exec", "default"),
        ("get", "configmaps", "default"),
        ("delete", "deployments.apps", "default"),
        ("delete", "gemmaservers.gemma.ai", "default"),
        ("update", "gemmaservers.gemma.ai", "default"),
        ("create", "serviceaccounts/token", NAMESPACE),
        ("create", "rolebindings.rbac.authorization.k8s.io", "default"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
        ("impersonate", "users", None),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "persistentvolumeclaims", "default"),
    ],
)
def test_the_account_is_denied_what_it_does_not_need(
    installed: Installation, verb: str, resource: str, namespace: str | None
) -> None:
    assert not _allowed(installed.cluster, verb, resource, namespace)


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("patch", "gemmaservers.gemma.ai/status", "default"),
        ("watch", "gemmatrainings.gemma.ai", None),
        ("create", "deployments.apps", "default"),
        ("delete", "jobs.batch", "default"),
        ("create", "jobsets.jobset.x-k8s.io", "default"),
        ("delete", "horizontalpodautoscalers.autoscaling", "default"),
        ("delete", "inferencepools.inference.networking.k8s.io", "default"),
        ("get", "inferencepools.inference.networking.k8s.io", "default"),
        ("watch", "pods", None),
        ("create", "events.events.k8s.io", "default"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ],
)
def test_the_account_may_do_what_the_handlers_do(
    installed: Installation, verb: str, resource: str, namespace: str | None
) -> None:
    assert _allowed(installed.cluster, verb, resource, namespace)


def test_reading_a_secret_with_the_token_is_forbidden(
    installed: Installation, api_client: client.ApiClient, namespace: str
) -> None:
    installed.cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", "hf-token", "--from-literal=t=x"
    )
    with connect(str(installed.token_kubeconfig(api_client))) as kube:
        with pytest.raises(ForbiddenError) as caught:
            kube.get("v1", "Secret", "hf-token", namespace)
        assert caught.value.status == 403
        assert USER in str(caught.value)
        with pytest.raises(ForbiddenError):
            kube.list("v1", "Secret", NAMESPACE)
        # What it may do works with the same token.
        assert kube.list("v1", "Pod", namespace) == []


def test_health_of_an_unschedulable_server_is_degraded(
    restricted_operator: OperatorProcess, restricted_namespace: str, crds: LocalCluster
) -> None:
    path = next(p for p in SAMPLE_FILES if p.stem == "server-tiny-cpu")
    doc = load(path)
    doc["spec"]["accelerator"] = {"type": "cpu"}
    doc["spec"]["pod"] = {"nodeSelector": {"pool": "missing"}}
    crds.kubectl("-n", restricted_namespace, "apply", "-f", "-", input_text=json.dumps(doc))
    obj = samples.wait_settled(crds, restricted_namespace, doc, "Degraded")
    status, message = health(obj)
    assert status == "Degraded"
    assert message.startswith("Unschedulable: ")
