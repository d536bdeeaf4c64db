"""`gemma_operator.k8s` against a real API server.

Aspects:
- server-side apply creates, is idempotent (a repeat leaves resourceVersion alone), repairs drift made by
  another manager when forced, and reports the other manager's field as ConflictError when not forced;
- reads: get returns None for a missing object and raises NotFoundError for a kind the server does not
  serve; list filters by label and field selector; delete returns False when the object is gone;
- patch_status merges into the status subresource of a custom resource (a throw-away CRD);
- errors: InvalidError names the refused field (also for a field the schema lacks, which the API server
  answers with 500), ForbiddenError for a ServiceAccount without RBAC rights,
  ConflictError (AlreadyExists) on a second create, TransientError when the server cannot be reached;
- discovery: has_api for a built-in kind and for a kind that is not installed, server_version;
- apply_all applies in a safe order and prune deletes only the owned children no longer desired;
- events: emit creates an events.k8s.io/v1 Event (readable as a core/v1 Event), drops a repeat within
  the window, and truncates a long note to what the API server accepts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gemma_operator.k8s import (
    ConflictError,
    EventRecorder,
    ForbiddenError,
    InvalidError,
    Kube,
    NotFoundError,
    TransientError,
    apply_all,
    connect,
    prune,
)
from tests.cluster.harness.control_plane import LocalCluster, free_port
from tests.cluster.harness.wait import wait_for

MANAGER = "gemma-operator-test"
WIDGET_GROUP = "k8s-test.gemma.ai"
WIDGET_API = f"{WIDGET_GROUP}/v1"


@pytest.fixture(scope="module")
def kube(cluster: LocalCluster) -> Iterator[Kube]:
    with connect(str(cluster.kubeconfig)) as kube:
        yield kube


@pytest.fixture(scope="module")
def widgets(kube: Kube) -> Iterator[str]:
    """A tiny namespaced CRD with a status subresource that keeps any status; deleted afterwards."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{WIDGET_GROUP}"},
        "spec": {
            "group": WIDGET_GROUP,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.apply(crd, field_manager=MANAGER)
    wait_for(lambda: kube.has_api(WIDGET_API, "Widget", refresh=True), 30, "the Widget API to be served")
    yield WIDGET_API
    kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])


def _config_map(namespace: str, name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "data": data,
    }


def _deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:0"}]},
            },
        },
    }


# -- server-side apply --------------------------------------------------------------------------------


def test_apply_creates_and_a_repeat_changes_nothing(kube: Kube, namespace: str) -> None:
    body = _config_map(namespace, "settings", {"mode": "serve"}, labels={"tier": "a"})
    created = kube.apply(body, field_manager=MANAGER)
    assert created["data"] == {"mode": "serve"}
    assert created["metadata"]["namespace"] == namespace
    # Plain dicts with the API's camelCase keys.
    assert "resourceVersion" in created["metadata"]
    assert "creationTimestamp" in created["metadata"]
    again = kube.apply(body, field_manager=MANAGER)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    stored = kube.get("v1", "ConfigMap", "settings", namespace)
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_apply_with_force_repairs_drift_made_by_another_manager(
    kube: Kube, cluster: LocalCluster, namespace: str
) -> None:
    body = _config_map(namespace, "drift", {"mode": "serve", "port": "8000"})
    kube.apply(body, field_manager=MANAGER)
    patch = json.dumps({"data": {"mode": "edited"}})
    cluster.kubectl("-n", namespace, "patch", "configmap", "drift", "--type=merge", "-p", patch)
    assert kube.get("v1", "ConfigMap", "drift", namespace)["data"]["mode"] == "edited"

    repaired = kube.apply(body, field_manager=MANAGER, force=True)

    assert repaired["data"] == {"mode": "serve", "port": "8000"}
    owners = {entry["manager"] for entry in repaired["metadata"]["managedFields"]}
    assert MANAGER in owners


def test_apply_without_force_reports_the_field_another_manager_owns(
    kube: Kube, cluster: LocalCluster, namespace: str
) -> None:
    body = _config_map(namespace, "contested", {"mode": "serve"})
    kube.apply(body, field_manager=MANAGER)
    patch = json.dumps({"data": {"mode": "edited"}})
    cluster.kubectl("-n", namespace, "patch", "configmap", "contested", "--type=merge", "-p", patch)

    with pytest.raises(ConflictError) as caught:
        kube.apply(body, field_manager=MANAGER, force=False)

    err = caught.value
    assert err.status == 409
    assert ".data.mode" in err.fields
    assert "kubectl-patch" in str(err)
    # Chained: the client's exception stays reachable for debugging, never raised to the caller.
    assert err.__cause__ is not None
    assert kube.get("v1", "ConfigMap", "contested", namespace)["data"]["mode"] == "edited"


# -- reads and deletes --------------------------------------------------------------------------------


def test_get_returns_none_for_a_missing_object(kube: Kube, namespace: str) -> None:
    assert kube.get("v1", "ConfigMap", "absent", namespace) is None
    assert kube.get("apps/v1", "Deployment", "absent", namespace) is None


def test_a_kind_the_server_does_not_serve_raises_not_found(kube: Kube, namespace: str) -> None:
    with pytest.raises(NotFoundError, match="JobSet"):
        kube.get("jobset.x-k8s.io/v1alpha2", "JobSet", "absent", namespace)


def test_a_namespaced_kind_without_namespace_is_refused_before_any_request(kube: Kube) -> None:
    with pytest.raises(ValueError, match="namespaced"):
        kube.get("v1", "ConfigMap", "anything")


def test_list_filters_by_label_and_field_selector(kube: Kube, namespace: str) -> None:
    for name, tier in [("one", "a"), ("two", "a"), ("three", "b")]:
        kube.apply(_config_map(namespace, name, {}, labels={"tier": tier}), field_manager=MANAGER)

    by_label = kube.list("v1", "ConfigMap", namespace=namespace, label_selector="tier=a")
    assert sorted(obj["metadata"]["name"] for obj in by_label) == ["one", "two"]
    # Items carry apiVersion and kind, which a raw list response leaves out.
    assert {(obj["apiVersion"], obj["kind"]) for obj in by_label} == {("v1", "ConfigMap")}
    by_field = kube.list("v1", "ConfigMap", namespace=namespace, field_selector="metadata.name=three")
    assert [obj["metadata"]["name"] for obj in by_field] == ["three"]
    assert kube.list("v1", "ConfigMap", namespace=namespace, label_selector="tier=c") == []


def test_delete_returns_false_when_already_gone(kube: Kube, namespace: str) -> None:
    kube.apply(_config_map(namespace, "doomed", {}), field_manager=MANAGER)
    assert kube.delete("v1", "ConfigMap", "doomed", namespace) is True
    assert kube.delete("v1", "ConfigMap", "doomed", namespace) is False
    assert kube.get("v1", "ConfigMap", "doomed", namespace) is None


def test_a_second_create_is_a_conflict_already_exists(kube: Kube, namespace: str) -> None:
    body = _config_map(namespace, "once", {"a": "1"})
    assert kube.create(body)["metadata"]["name"] == "once"
    with pytest.raises(ConflictError) as caught:
        kube.create(body)
    assert caught.value.reason == "AlreadyExists"


# -- status subresource ----------------------------------------------------------------------------


def test_patch_status_merges_into_the_status_subresource(kube: Kube, widgets: str, namespace: str) -> None:
    widget = {
        "apiVersion": widgets,
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
        "spec": {"size": 1},
    }
    kube.apply(widget, field_manager=MANAGER)

    first = kube.patch_status(
        widgets,
        "Widget",
        "w",
        namespace,
        status={"phase": "Pending", "counts": {"a": 1}},
        field_manager=MANAGER,
    )
    assert first["status"] == {"phase": "Pending", "counts": {"a": 1}}
    second = kube.patch_status(
        widgets, "Widget", "w", namespace, status={"counts": {"b": 2}}, field_manager=MANAGER
    )
    # Keys not mentioned stay; nested objects merge.
    assert second["status"] == {"phase": "Pending", "counts": {"a": 1, "b": 2}}
    third = kube.patch_status(
        widgets, "Widget", "w", namespace, status={"phase": None}, field_manager=MANAGER
    )
    assert third["status"] == {"counts": {"a": 1, "b": 2}}
    # The status subresource never touches spec, and applying spec never drops status.
    kube.apply({**widget, "spec": {"size": 2}}, field_manager=MANAGER)
    stored = kube.get(widgets, "Widget", "w", namespace)
    assert stored is not None
    assert stored["spec"] == {"size": 2}
    assert stored["status"] == {"counts": {"a": 1, "b": 2}}


# -- errors ------------------------------------------------------------------------------------------


def test_an_invalid_deployment_names_the_field(kube: Kube, namespace: str) -> None:
    with pytest.raises(InvalidError) as caught:
        kube.apply(_deployment(namespace, "negative", replicas=-1), field_manager=MANAGER)
    err = caught.value
    assert err.status == 422
    assert err.reason == "Invalid"
    assert "spec.replicas" in err.fields
    assert "spec.replicas" in str(err)


def test_an_invalid_name_names_the_field(kube: Kube, namespace: str) -> None:
    with pytest.raises(InvalidError) as caught:
        kube.create(_config_map(namespace, "Bad_Name", {}))
    assert "metadata.name" in caught.value.fields
    assert "Bad_Name" in str(caught.value)


def test_applying_a_field_the_schema_lacks_is_invalid_not_transient(kube: Kube, namespace: str) -> None:
    # The API server answers 500 here (kubernetes/kubernetes#122480); retrying could never help.
    body = _config_map(namespace, "unknown-field", {})
    body["spec"] = {"replicas": 1}
    with pytest.raises(InvalidError) as caught:
        kube.apply(body, field_manager=MANAGER)
    assert caught.value.fields == ("spec",)
    assert "field not declared in schema" in str(caught.value)


def test_a_service_account_without_rights_is_forbidden(
    kube: Kube, cluster: LocalCluster, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    kube.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": namespace}}
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=600))
    issued = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        "nobody", namespace, request
    )
    user = f"system:serviceaccount:{namespace}:nobody"
    path = cluster.write_kubeconfig(tmp_path / "nobody.kubeconfig", user, issued.status.token, namespace)

    with connect(str(path)) as weak:
        # Discovery is open to every authenticated user; the objects are not.
        assert weak.has_api("v1", "ConfigMap")
        with pytest.raises(ForbiddenError) as caught:
            weak.get("v1", "ConfigMap", "anything", namespace)
        assert caught.value.status == 403
        assert user in str(caught.value)
        with pytest.raises(ForbiddenError):
            weak.apply(_config_map(namespace, "nope", {}), field_manager=MANAGER)


def test_an_unreachable_server_is_transient(cluster: LocalCluster, tmp_path: Path) -> None:
    path = cluster.write_kubeconfig(tmp_path / "closed.kubeconfig", "nobody", "token")
    # Same cluster entry, but a port nothing listens on.
    path.write_text(path.read_text().replace(cluster.server, f"https://127.0.0.1:{free_port()}"))
    with connect(str(path)) as unreachable, pytest.raises(TransientError) as caught:
        unreachable.get("v1", "ConfigMap", "anything", "default")
    assert caught.value.retry_after is None


# -- discovery ---------------------------------------------------------------------------------------


def test_has_api_for_a_builtin_and_a_missing_kind(kube: Kube) -> None:
    assert kube.has_api("apps/v1", "Deployment")
    assert kube.has_api("v1", "ConfigMap")
    assert not kube.has_api("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert not kube.has_api("apps/v1", "JobSet")
    # A subresource shares its parent's kind but is no API of its own.
    assert not kube.has_api("autoscaling/v1", "Deployment")


def test_server_version(kube: Kube) -> None:
    assert kube.server_version().startswith("v1.")


# -- apply_all and prune -----------------------------------------------------------------------------


def test_apply_all_orders_and_prune_deletes_only_the_undesired_owned_child(
    kube: Kube, namespace: str
) -> None:
    owner = kube.apply(_config_map(namespace, "owner", {}), field_manager=MANAGER)
    owner_uid = owner["metadata"]["uid"]
    selector = f"gemma.ai/test-owner={owner_uid[:8]}"
    meta = {
        "namespace": namespace,
        "labels": {"gemma.ai/test-owner": owner_uid[:8]},
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "server", **meta},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "server"},
            "minReplicas": 1,
            "maxReplicas": 2,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server", **meta},
        "spec": {"ports": [{"port": 8000}], "selector": {"app": "server"}},
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "server", **meta}, "data": {}}

    applied = apply_all(kube, [hpa, service, config], field_manager=MANAGER)

    assert [obj["kind"] for obj in applied] == ["ConfigMap", "Service", "HorizontalPodAutoscaler"]
    # A labelled object without our ownerReference is not ours to delete.
    foreign_meta = {"labels": meta["labels"]}
    kube.apply(_config_map(namespace, "foreign", {}, **foreign_meta), field_manager=MANAGER)
    kinds = [
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("jobset.x-k8s.io/v1alpha2", "JobSet"),  # not installed: nothing to prune, no error
    ]
    keep = {("ConfigMap", "server"), ("Service", "server")}  # autoscaling was turned off

    deleted = prune(kube, owner_uid, namespace, kinds=kinds, keep=keep, label_selector=selector)

    assert deleted == ["HorizontalPodAutoscaler/server"]
    assert kube.get("autoscaling/v2", "HorizontalPodAutoscaler", "server", namespace) is None
    for kind, name in [("ConfigMap", "server"), ("Service", "server"), ("ConfigMap", "foreign")]:
        assert kube.get("v1", kind, name, namespace) is not None
    assert prune(kube, owner_uid, namespace, kinds=kinds, keep=keep, label_selector=selector) == []


# -- events ------------------------------------------------------------------------------------------


def test_emit_creates_an_event_and_drops_a_repeat(kube: Kube, namespace: str) -> None:
    involved = kube.apply(_config_map(namespace, f"evt-{uuid.uuid4().hex[:6]}", {}), field_manager=MANAGER)
    name = involved["metadata"]["name"]

    emit = EventRecorder().emit
    event = emit(kube, involved, "Warning", "InvalidSpec", "spec.replicas: must be at least 1")

    assert event is not None
    assert event["apiVersion"] == "events.k8s.io/v1"
    assert event["regarding"]["uid"] == involved["metadata"]["uid"]
    assert event["reportingController"] == "gemma.ai/gemma-operator"
    assert event["note"] == "spec.replicas: must be at least 1"
    assert emit(kube, involved, "Warning", "InvalidSpec", "spec.replicas: must be at least 1") is None
    # A different message about the same object is news.
    assert emit(kube, involved, "Normal", "Applied", "children applied") is not None

    # The scheduler's and kubelet's messages are read as core/v1 Events; ours show up there too.
    core = kube.list("v1", "Event", namespace=namespace, field_selector=f"involvedObject.name={name}")
    assert sorted((e["type"], e["reason"], e["message"]) for e in core) == [
        ("Normal", "Applied", "children applied"),
        ("Warning", "InvalidSpec", "spec.replicas: must be at least 1"),
    ]


def test_the_recorder_emits_again_after_the_window_and_truncates_long_notes(
    kube: Kube, namespace: str
) -> None:
    involved = kube.apply(_config_map(namespace, "evt-window", {}), field_manager=MANAGER)
    now = [1000.0]
    recorder = EventRecorder(window=60.0, instance="test", clock=lambda: now[0])
    long_message = "é" * 2000  # 4000 bytes of UTF-8; the API server takes at most 1024

    first = recorder.emit(kube, involved, "Warning", "Slow", long_message)
    now[0] += 30
    assert recorder.emit(kube, involved, "Warning", "Slow", long_message) is None
    now[0] += 31
    again = recorder.emit(kube, involved, "Warning", "Slow", long_message)

    assert first is not None
    assert again is not None
    assert len(first["note"].encode()) <= 1024
    assert first["note"].endswith("...")
    assert first["reportingInstance"] == "gemma-operator-test"
