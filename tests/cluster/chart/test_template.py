"""The chart rendered by helm (no API server needed): `helm lint --strict` passes for the default and the
optional values; the default render is the committed install.yaml; the Deployment has probes, resources,
a restricted security context and a config-hash annotation that follows the settings; the RBAC has a
comment on every rule, no wildcard and nothing on Secrets; watchNamespaces turns the namespaced rules
into Roles; metrics Service, ServiceMonitor, image digests and an existing ServiceAccount render."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from gemma_operator.config import Settings
from gemma_operator.render.pods import CONTAINER_SECURITY
from tests.cluster.chart.helm import Helm, find
from tests.unit.packaging.generate import CHART, INSTALL, install_yaml

DEFAULT_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
}


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment")


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["operator.watchNamespaces={team-a,team-b}", "rbac.jobSets=false"],
        ["metrics.service.enabled=true", "metrics.serviceMonitor.enabled=true"],
        ["serviceAccount.create=false", "serviceAccount.name=ops", "rbac.aggregateToDefaultRoles=false"],
    ],
    ids=["defaults", "namespaced", "metrics", "existing-account"],
)
def test_helm_lint_strict_passes(helm: Helm, values: list[str]) -> None:
    args = [arg for value in values for arg in ("--set", value)]
    out = helm.run("lint", "--strict", str(CHART), *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_default_render_is_the_committed_install_yaml(helm: Helm) -> None:
    assert INSTALL.read_text() == install_yaml(helm.binary), "manifests/install.yaml is stale: make manifests"
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    assert docs[0]["kind"] == "Namespace"
    assert {d["kind"] for d in docs} == {"Namespace", "CustomResourceDefinition", *DEFAULT_KINDS}


def test_defaults_render_one_restricted_operator_with_probes_and_resources(helm: Helm) -> None:
    objects = helm.template()
    assert {o["kind"] for o in objects} == DEFAULT_KINDS
    assert all(
        o["metadata"].get("namespace") == "gemma-system"
        for o in objects
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    )
    deployment = _deployment(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "gemma-operator"
    container = _container(objects)
    assert container["image"] == "ghcr.io/gemma-operator/gemma-operator:0.1.0"
    assert container["args"] == ["run"]
    # The same restricted profile as the runtime pods the operator creates.
    assert container["securityContext"] == CONTAINER_SECURITY
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 9090}
    assert container["envFrom"] == [{"configMapRef": {"name": "gemma-operator-config"}}]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_config_hash_follows_the_settings(helm: Helm) -> None:
    def checksum(*values: str) -> str:
        annotations = _deployment(helm.template(*values))["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum() == checksum()
    assert checksum() != checksum("operator.resyncSeconds=30")
    assert checksum() == checksum("resources.limits.memory=1Gi")  # not a setting: no restart needed


def test_settings_reach_the_config_map(helm: Helm) -> None:
    objects = helm.template(
        "operator.watchNamespaces={team-a,team-b}",
        "runtime.image.tag=9.9",
        "runtime.image.pullPolicy=Always",
        "operator.logLevel=DEBUG",
    )
    data = find(objects, "ConfigMap")["data"]
    assert data["GEMMA_OPERATOR_NAMESPACES"] == "team-a,team-b"
    assert data["GEMMA_OPERATOR_RUNTIME_IMAGE"] == "ghcr.io/gemma-operator/gemma-runtime:9.9"
    assert data["GEMMA_OPERATOR_IMAGE_PULL_POLICY"] == "Always"
    assert data["GEMMA_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert data["GEMMA_OPERATOR_BIND_ADDRESS"] == "0.0.0.0"


def test_the_operator_reads_the_config_map_as_its_settings(helm: Helm) -> None:
    data = find(
        helm.template("operator.watchNamespaces={a,b}", "operator.debounceSeconds=0.25"), "ConfigMap"
    )["data"]
    settings = Settings.from_env(data)
    assert settings.namespaces == ("a", "b")
    assert settings.debounce_seconds == 0.25
    assert settings.bind_address == "0.0.0.0"
    defaults = Settings.from_env(find(helm.template(), "ConfigMap")["data"])
    assert dataclasses.replace(defaults, bind_address=Settings().bind_address) == Settings()


def test_an_image_digest_wins_over_the_tag(helm: Helm) -> None:
    digest = "sha256:" + "a" * 64
    objects = helm.template(f"image.digest={digest}", f"runtime.image.digest={digest}")
    assert _container(objects)["image"] == f"ghcr.io/gemma-operator/gemma-operator@{digest}"
    assert find(objects, "ConfigMap")["data"]["GEMMA_OPERATOR_RUNTIME_IMAGE"].endswith(f"@{digest}")


def test_every_rbac_rule_says_why_and_nothing_touches_secrets(helm: Helm) -> None:
    text = (CHART / "templates" / "_rbac.tpl").read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("- apiGroups:"):
            above = next(prev for prev in reversed(lines[:number]) if not prev.startswith("{{"))
            assert above.startswith("#"), f"rule without a comment: {line} (line {number + 1})"
    for values in ([], ["operator.watchNamespaces={team-a}"]):
        for role in (o for o in helm.template(*values) if o["kind"] in ("ClusterRole", "Role")):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert "secrets" not in rule["resources"], rule
                assert "nodes" not in rule["resources"], rule


def test_watch_namespaces_grant_roles_there_and_only_cluster_reads_cluster_wide(helm: Helm) -> None:
    objects = helm.template("operator.watchNamespaces={team-a,team-b}")
    roles = [o for o in objects if o["kind"] == "Role"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "gemma-operator", "namespace": "gemma-system"}]
        for b in bindings
    )
    cluster_role = find(objects, "ClusterRole", "gemma-operator")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    assert all(set(rule["verbs"]) <= {"list", "watch"} for rule in cluster_role["rules"])


def test_jobset_rule_is_optional(helm: Helm) -> None:
    def resources(*values: str) -> set[str]:
        role = find(helm.template(*values), "ClusterRole", "gemma-operator")
        return {r for rule in role["rules"] for r in rule["resources"]}

    assert "jobsets" in resources()
    assert "jobsets" not in resources("rbac.jobSets=false")


def test_user_roles_aggregate_into_admin_edit_and_view(helm: Helm) -> None:
    objects = helm.template()
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRole"} == {
        "gemma-operator",
        "gemma-operator-edit",
        "gemma-operator-view",
    }
    edit = find(objects, "ClusterRole", "gemma-operator-edit")["metadata"]["labels"]
    assert edit["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    view = find(objects, "ClusterRole", "gemma-operator-view")["metadata"]["labels"]
    assert view["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "gemma-operator-edit" not in {
        o["metadata"]["name"] for o in helm.template("rbac.aggregateToDefaultRoles=false")
    }


def test_metrics_service_and_service_monitor(helm: Helm) -> None:
    objects = helm.template("metrics.service.enabled=true", "metrics.serviceMonitor.enabled=true")
    service = find(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == _deployment(objects)["spec"]["selector"]["matchLabels"]
    monitor = find(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    with pytest.raises(RuntimeError, match=r"needs metrics\.service\.enabled"):
        helm.template("metrics.serviceMonitor.enabled=true")


def test_an_existing_service_account_is_used_not_created(helm: Helm) -> None:
    objects = helm.template("serviceAccount.create=false", "serviceAccount.name=ops")
    assert "ServiceAccount" not in {o["kind"] for o in objects}
    assert _deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    binding = find(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "ops"


def test_scheduling_values_reach_the_pod(helm: Helm) -> None:
    objects = helm.template(
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "priorityClassName=system-cluster-critical",
        "podLabels.team=ml",
        "imagePullSecrets[0].name=regcred",
    )
    pod = _deployment(objects)["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["team"] == "ml"


def test_scrape_config_rules_follow_the_setting(helm: Helm) -> None:
    def resources(*values: str) -> set[str]:
        role = find(helm.template(*values), "ClusterRole", "gemma-operator")
        return {r for rule in role["rules"] for r in rule["resources"]}

    assert not {"podmonitorings", "servicemonitors"} & resources()
    assert {"podmonitorings", "servicemonitors"} <= resources(
        "operator.scrapeMonitors={PodMonitoring,ServiceMonitor}"
    )
    granted = resources("operator.scrapeMonitors={PodMonitoring}")
    assert "podmonitorings" in granted
    assert "servicemonitors" not in granted
    config = find(helm.template("operator.scrapeMonitors={PodMonitoring,ServiceMonitor}"), "ConfigMap")
    assert Settings.from_env(config["data"]).scrape_monitors == "PodMonitoring,ServiceMonitor"
