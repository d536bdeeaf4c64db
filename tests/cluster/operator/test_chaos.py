"""Chaos on the real control plane: the API server killed and restarted while 50 GemmaServers and 10
GemmaTrainings reconcile; etcd killed and restarted; a watch that expires (410 Gone) after etcd's history
was compacted; the operator SIGKILLed in the middle of a slice restart, after it recorded the restart and
before it created the next attempt's Job. After each, every resource converges, no child is duplicated or
orphaned, restarts are counted exactly once, and the operator process never exited."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_cases import merge, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess, operator_trouble
from tests.cluster.harness.wait import wait_for
from tests.cluster.operator.test_training import _fail

# Small requests so 60 pods fit the two fake 16-CPU nodes beside whatever other tests left running.
LIGHT = {"pod": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}}
CHILD_KINDS = "deployments,services,configmaps,poddisruptionbudgets,jobs"


def _server(name: str, replicas: int = 1) -> dict[str, Any]:
    return merge(
        sample("server-tiny-cpu"), {"metadata": {"name": name}, "spec": {**LIGHT, "replicas": replicas}}
    )


def _training(name: str, **spec: Any) -> dict[str, Any]:
    return merge(sample("training-tiny-cpu"), {"metadata": {"name": name}, "spec": {**LIGHT, **spec}})


def _apply(cluster: LocalCluster, namespace: str, docs: list[dict[str, Any]], *, within: float = 60) -> None:
    """Apply ``docs``, retrying while the API server (or etcd behind it) is still coming back."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    deadline = time.monotonic() + within
    while True:
        try:
            cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=body)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _get(cluster: LocalCluster, namespace: str, kinds: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(cluster.kubectl("-n", namespace, "get", kinds, "-o", "json"))[
        "items"
    ]
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def _problems(
    cluster: LocalCluster, namespace: str, servers: dict[str, int], trainings: dict[str, int]
) -> list[str]:
    """What keeps the namespace from its converged state (empty when converged): every GemmaServer Ready
    with its replicas, every GemmaTraining Running its expected attempt, exactly one of each child, each
    owned by a resource that exists, and one pod per replica or host."""
    problems = []
    owners = {}
    for obj in _get(cluster, namespace, "gemmaservers,gemmatrainings"):
        meta, status = obj["metadata"], obj.get("status", {})
        owners[meta["uid"]] = meta["name"]
        want = "Ready" if obj["kind"] == "GemmaServer" else "Running"
        if status.get("phase") != want or status.get("observedGeneration") != meta["generation"]:
            problems.append(
                f"{meta['name']}: phase {status.get('phase')}, gen {status.get('observedGeneration')}"
            )
        if obj["kind"] == "GemmaTraining":
            # Every restart in these tests is an application error: each attempt counts exactly once.
            counts = (
                status.get("attempt", 0),
                status.get("restarts", 0),
                len(status.get("restartHistory", [])),
            )
            if counts != (trainings[meta["name"]],) * 3:
                problems.append(f"{meta['name']}: attempt, restarts, history {counts}")
    if sorted(owners.values()) != sorted([*servers, *trainings]):
        problems.append(f"resources {sorted(owners.values())}")
    children: Counter[tuple[str, str]] = Counter()
    for child in _get(cluster, namespace, CHILD_KINDS):
        refs = [r["uid"] for r in child["metadata"].get("ownerReferences", []) if r.get("controller")]
        if child["metadata"]["name"] in ("kubernetes", "kube-root-ca.crt"):
            continue
        if len(refs) != 1 or refs[0] not in owners:
            problems.append(f"orphan {child['kind']} {child['metadata']['name']}")
            continue
        children[(owners[refs[0]], child["kind"])] += 1
    expected = Counter(
        {
            (s, kind): 1
            for s in servers
            for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget")
        }
        | {(t, kind): 1 for t in trainings for kind in ("Service", "ConfigMap", "Job")}
    )
    problems += [
        f"{key}: {children[key]} (want {n})" for key, n in (expected | children).items() if children[key] != n
    ]
    pods = Counter(
        p["metadata"]["labels"].get("gemma.ai/server") or p["metadata"]["labels"].get("gemma.ai/training")
        for p in _get(cluster, namespace, "pods")
        if p["status"].get("phase") == "Running"
    )
    want_pods = {**servers, **dict.fromkeys(trainings, 1)}
    problems += [
        f"{n} running pods of {name} (want {want_pods[name]})"
        for name, n in pods.items()
        if want_pods.get(name) != n
    ]
    problems += [f"no running pod of {name}" for name in want_pods if want_pods[name] and not pods[name]]
    return problems


def _converge(
    cluster: LocalCluster,
    namespace: str,
    servers: dict[str, int],
    trainings: dict[str, int],
    what: str,
    *,
    timeout: float = 300,
) -> None:
    """Poll until converged: generous, since this 2-core machine runs the whole control plane too."""
    last: list[str] = []

    def converged() -> bool:
        last[:] = _problems(cluster, namespace, servers, trainings)
        return not last

    try:
        wait_for(converged, timeout, what, interval=2)
    except TimeoutError:
        log = cluster.workdir / "logs" / "gemma-operator.log"
        raise AssertionError(f"not converged {what}: {last[:20]}\n{operator_trouble(log)}") from None


def _running_pod(cluster: LocalCluster, namespace: str, training: str) -> dict[str, Any] | None:
    pods = [
        p
        for p in _get(cluster, namespace, "pods")
        if p["metadata"]["labels"].get("gemma.ai/training") == training
        and p["status"].get("phase") == "Running"
    ]
    return pods[0] if pods else None


@pytest.fixture
def watched_operator(running_operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The operator, which must not exit through the test: the same process before and after."""
    assert running_operator.process is not None
    pid = running_operator.process.pid
    yield running_operator
    assert running_operator.process.poll() is None, f"the operator exited:\n{running_operator.log_tail()}"
    assert running_operator.process.pid == pid, "the operator was restarted"


def test_apiserver_restart_while_50_servers_and_10_trainings_reconcile(
    crds: LocalCluster, watched_operator: OperatorProcess, namespace: str
) -> None:
    servers = {f"s{i:02d}": 1 for i in range(50)}
    trainings = dict.fromkeys((f"t{i}" for i in range(10)), 0)
    _apply(crds, namespace, [_server(s) for s in servers] + [_training(t) for t in trainings])
    # Kill the API server mid-reconcile (some children exist, most not yet) just as a slice fails.
    pod = wait_for(lambda: _running_pod(crds, namespace, "t0"), 120, "the first training's pod")
    wait_for(lambda: len(_get(crds, namespace, "deployments")) >= 3, 120, "reconciling under way")
    _fail(crds, namespace, pod["metadata"]["name"], 1)
    trainings["t0"] = 1
    crds.restart("kube-apiserver", kill=True, down=2)
    _converge(crds, namespace, servers, trainings, "after the API server restart", timeout=420)


def test_etcd_restart_then_changes_are_still_seen(
    crds: LocalCluster, watched_operator: OperatorProcess, namespace: str
) -> None:
    servers = {"a": 1, "b": 1}
    trainings = {"t": 0}
    _apply(crds, namespace, [_server(s) for s in servers] + [_training("t")])
    _converge(crds, namespace, servers, trainings, "before the etcd restart")
    crds.restart("etcd", kill=True, down=2)
    # The operator still acts on what happens next: a spec change, a child deleted, a new resource.
    deleted = crds.kubectl("-n", namespace, "get", "deployment", "b", "-o", "jsonpath={.metadata.uid}")
    servers.update(a=2, c=1)
    _apply(crds, namespace, [_server("a", 2), _server("c")])
    crds.kubectl("-n", namespace, "delete", "deployment", "b")
    _converge(crds, namespace, servers, trainings, "after the etcd restart")
    assert (
        crds.kubectl("-n", namespace, "get", "deployment", "b", "-o", "jsonpath={.metadata.uid}") != deleted
    )


def _watch_from(cluster: LocalCluster, namespace: str, resource_version: str) -> dict[str, Any]:
    """The first event of a watch of GemmaServers resumed from ``resource_version``."""
    path = (
        f"/apis/gemma.ai/v1alpha1/namespaces/{namespace}/gemmaservers"
        f"?watch=1&resourceVersion={resource_version}&timeoutSeconds=2"
    )
    first: dict[str, Any] = json.loads(cluster.kubectl("get", "--raw", path).splitlines()[0])
    return first


def test_an_expired_watch_410_gone_is_listed_again(
    crds: LocalCluster, watched_operator: OperatorProcess, namespace: str
) -> None:
    servers = {"a": 1, "b": 1}
    _apply(crds, namespace, [_server(s) for s in servers])
    _converge(crds, namespace, servers, {}, "before the watch expires")
    path = f"/apis/gemma.ai/v1alpha1/namespaces/{namespace}/gemmaservers"
    # The list's own resourceVersion, where a watch would resume (kubectl's `get -o json` List has none).
    seen = json.loads(crds.kubectl("get", "--raw", path))["metadata"]["resourceVersion"]
    # Two writes past it: a watch from exactly the compaction revision would still start (then fail
    # with a 500, as etcd no longer has the previous value); one from before it cannot.
    for server in servers:
        crds.kubectl("-n", namespace, "annotate", "gemmaserver", server, "chaos=written-after")
    try:
        # The API server goes down, closing the operator's watches; etcd's history is compacted meanwhile.
        # Without the watch cache (which would answer an old watch from a fresh list) every watch resumed
        # from before the compaction is answered 410 Gone by etcd itself.
        crds.restart(
            "kube-apiserver", kill=True, while_down=crds.compact_etcd, flags={"--watch-cache": "false"}
        )
        event = _watch_from(crds, namespace, seen)
        assert (event["type"], event["object"].get("code")) == ("ERROR", 410), json.dumps(event)
        # The operator listed again and sees what changed since: a spec change, a new resource.
        servers.update(a=2, c=1)
        _apply(crds, namespace, [_server("a", 2), _server("c")])
        _converge(crds, namespace, servers, {}, "after the watch expired")
    finally:
        crds.restart("kube-apiserver", kill=True, flags={"--watch-cache": "true"})
    _converge(crds, namespace, servers, {}, "with the watch cache back")


def test_operator_sigkilled_between_counting_a_restart_and_replacing_the_slice(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str
) -> None:
    # One Job at a time in this namespace: the next attempt's Job is refused, which holds the operator
    # exactly between the status that counts the restart and the Job that replaces the failed one.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "one-job"},
        "spec": {"hard": {"count/jobs.batch": "1"}},
    }
    _apply(crds, namespace, [quota])
    wait_for(
        lambda: (
            "count/jobs.batch" in _get(crds, namespace, "resourcequotas")[0].get("status", {}).get("used", {})
        ),
        60,
        "the quota to be counted",
    )
    _apply(crds, namespace, [_training("t", failurePolicy={"maxRestarts": 3})])
    _converge(crds, namespace, {}, {"t": 0}, "before the slice fails")
    pod = _running_pod(crds, namespace, "t")
    assert pod is not None
    _fail(crds, namespace, pod["metadata"]["name"], 1)

    def window() -> dict[str, Any] | None:
        status: dict[str, Any] = _get(crds, namespace, "gemmatrainings")[0].get("status", {})
        jobs = [j["metadata"]["name"] for j in _get(crds, namespace, "jobs")]
        return status if status.get("attempt") == 1 and jobs == ["t-a0"] else None

    status = wait_for(window, 90, "the restart counted while the next Job is refused")
    assert status["restarts"] == 1
    running_operator.kill()
    crds.kubectl("-n", namespace, "delete", "resourcequota", "one-job")
    running_operator.start()
    _converge(crds, namespace, {}, {"t": 1}, "after the operator restarted")
    # Stable: several resyncs later, still one counted restart and one Job of the next attempt.
    time.sleep(3 * running_operator.resync_seconds)
    _converge(crds, namespace, {}, {"t": 1}, "a while later", timeout=60)
    training = _get(crds, namespace, "gemmatrainings")[0]
    assert (training["status"]["restarts"], training["status"]["attempt"]) == (1, 1)
    assert [r["counted"] for r in training["status"]["restartHistory"]] == [True]
    assert [j["metadata"]["name"] for j in _get(crds, namespace, "jobs")] == ["t-a1"]
    events = crds.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "reason=SliceRestarted", "-o", "json"
    )
    assert len(json.loads(events)["items"]) == 1
    assert running_operator.process is not None
    assert running_operator.process.poll() is None, running_operator.log_tail()
