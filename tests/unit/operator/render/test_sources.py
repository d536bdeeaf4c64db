"""Rendering sources, per URI scheme and for both kinds: the volumes, mounts and init containers each
needs; the hf:// cache (node-local emptyDir or a shared claim); the token only ever as a secretKeyRef
of the fetch container; and every rendered pod within the restricted Pod Security Standard."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.serving import render_server
from gemma_operator.render.sources import Fetcher, Mounts, resolve
from gemma_operator.render.training import render_workload
from tests.api_cases import SAMPLE_FILES, load, merge, sample
from tests.unit.operator.render.restricted import violations

SECRET = {"name": "hub-secret-name", "key": "hub-secret-key"}
URIS = {
    "gs": "gs://my-models/gemma-2b",
    "hf": "hf://google/gemma-2-2b-it",
    "pvc": "pvc://weights/gemma-2b",
    "file": "file:///models/gemma-2b",
}


def _with_source(kind: str, uri: str, **model: Any) -> dict[str, Any]:
    base = sample("server-tiny-cpu" if kind == "server" else "training-tiny-cpu")
    checkpoint = {"uri": uri, "secretRef": SECRET}
    return merge(base, {"spec": {"model": {"checkpoint": checkpoint, **model}}})


def _render(doc: dict[str, Any]) -> list[dict[str, Any]]:
    doc = merge(doc, {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}})
    if doc["kind"] == "GemmaServer":
        return render_server(doc, parse(doc), Settings())
    return render_workload(doc, parse(doc), Settings(), 0)


def _pod(children: list[dict[str, Any]]) -> dict[str, Any]:
    workload = next(c for c in children if c["kind"] in ("Deployment", "Job"))
    template: dict[str, Any] = workload["spec"]["template"]
    return template


def _config(children: list[dict[str, Any]]) -> str:
    config: str = next(c for c in children if c["kind"] == "ConfigMap")["data"]["runtime.yaml"]
    return config


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container["volumeMounts"]}


@pytest.mark.parametrize("kind", ["server", "training"])
def test_gs_mounts_the_bucket_read_only_through_fuse(kind: str) -> None:
    children = _render(_with_source(kind, URIS["gs"]))
    pod = _pod(children)
    assert pod["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    volume = _volumes(pod)["src-gcs-my-models"]["csi"]
    assert volume["driver"] == "gcsfuse.csi.storage.gke.io"
    assert volume["readOnly"] is True
    assert volume["volumeAttributes"]["bucketName"] == "my-models"
    mount = _mounts(pod["spec"]["containers"][0])["src-gcs-my-models"]
    assert mount == {
        "name": "src-gcs-my-models",
        "mountPath": "/gemma/sources/gcs-my-models",
        "readOnly": True,
    }
    assert "checkpoint: /gemma/sources/gcs-my-models/gemma-2b" in _config(children)
    assert pod["spec"]["initContainers"] == []


@pytest.mark.parametrize("kind", ["server", "training"])
def test_pvc_mounts_the_claim_read_only(kind: str) -> None:
    children = _render(_with_source(kind, URIS["pvc"]))
    pod = _pod(children)
    claim = _volumes(pod)["src-pvc-weights"]["persistentVolumeClaim"]
    assert claim == {"claimName": "weights", "readOnly": True}
    assert _mounts(pod["spec"]["containers"][0])["src-pvc-weights"]["readOnly"] is True
    assert "checkpoint: /gemma/sources/pvc-weights/gemma-2b" in _config(children)
    assert "gke-gcsfuse/volumes" not in pod["metadata"].get("annotations", {})


@pytest.mark.parametrize("kind", ["server", "training"])
def test_file_reads_from_the_image(kind: str) -> None:
    children = _render(_with_source(kind, URIS["file"]))
    pod = _pod(children)
    assert "checkpoint: /models/gemma-2b" in _config(children)
    # Only the runtime's own volumes: its config, /tmp and the cache it keeps compiled programs in.
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"config", "tmp", "model-cache"}
    assert "compilation_cache: /gemma/cache/jax" in _config(children)
    assert pod["spec"]["initContainers"] == []


@pytest.mark.parametrize("kind", ["server", "training"])
def test_hf_fetches_into_a_node_local_cache_by_default(kind: str) -> None:
    children = _render(_with_source(kind, URIS["hf"] + "@refs/pr/1"))
    pod = _pod(children)
    (init,) = pod["spec"]["initContainers"]
    target = "/gemma/cache/hf/google/gemma-2-2b-it/refs--pr--1"
    assert init["name"] == "fetch-checkpoint"
    assert init["args"] == [
        "fetch",
        "hf://google/gemma-2-2b-it@refs/pr/1",
        "--to",
        target,
        "--token-env",
        "HF_TOKEN",
        "--status-port",
        "8000",
        "--message-file",
        "/dev/termination-log",
    ]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert _mounts(init)["model-cache"] == {"name": "model-cache", "mountPath": "/gemma/cache"}
    assert _volumes(pod)["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    runtime = pod["spec"]["containers"][0]
    # The runtime writes its compilation cache (jax/) beside the downloads.
    assert _mounts(runtime)["model-cache"] == {
        "name": "model-cache",
        "mountPath": "/gemma/cache",
        "readOnly": False,
    }
    assert "compilation_cache: /gemma/cache/jax" in _config(children)
    assert f"checkpoint: {target}\n" in _config(children)


def test_hf_cache_on_a_claim_is_shared_and_kept() -> None:
    children = _render(_with_source("server", URIS["hf"], cache={"claimName": "gemma-cache"}))
    pod = _pod(children)
    assert _volumes(pod)["model-cache"]["persistentVolumeClaim"] == {"claimName": "gemma-cache"}
    assert "resources" not in pod["spec"]["initContainers"][0]


@pytest.mark.parametrize("kind", ["server", "training"])
def test_compiled_programs_are_kept_on_the_cache_claim_whatever_the_source(kind: str) -> None:
    """A claim keeps JAX's compilation cache across pods and replicas, even with no hf:// download."""
    children = _render(_with_source(kind, URIS["pvc"], cache={"claimName": "gemma-cache"}))
    pod = _pod(children)
    assert _volumes(pod)["model-cache"]["persistentVolumeClaim"] == {"claimName": "gemma-cache"}
    assert _mounts(pod["spec"]["containers"][0])["model-cache"]["readOnly"] is False
    assert "compilation_cache: /gemma/cache/jax" in _config(children)
    assert pod["spec"]["initContainers"] == []


def test_hf_cache_size_limit_is_requested_from_the_node() -> None:
    children = _render(_with_source("training", URIS["hf"], cache={"sizeLimit": "40Gi"}))
    pod = _pod(children)
    assert _volumes(pod)["model-cache"]["emptyDir"] == {"sizeLimit": "40Gi"}
    assert pod["spec"]["initContainers"][0]["resources"] == {"requests": {"ephemeral-storage": "40Gi"}}


def test_tokenizer_from_the_same_repository_is_fetched_once() -> None:
    doc = _with_source("server", URIS["hf"], tokenizer={"uri": URIS["hf"]})
    children = _render(doc)
    (init,) = _pod(children)["spec"]["initContainers"]
    assert init["name"] == "fetch-checkpoint"
    assert "tokenizer: /gemma/cache/hf/google/gemma-2-2b-it/main\n" in _config(children)


def test_tokenizer_from_another_repository_gets_its_own_fetch() -> None:
    doc = _with_source("training", URIS["gs"], tokenizer={"uri": "hf://google/gemma-2b@v1"})
    children = _render(doc)
    (init,) = _pod(children)["spec"]["initContainers"]
    assert init["name"] == "fetch-tokenizer"
    assert init["env"][0]["valueFrom"]["secretKeyRef"] == SECRET
    assert "tokenizer: /gemma/cache/hf/google/gemma-2b/v1\n" in _config(children)


def test_output_to_the_hub_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot write to 'hf://a/b'; valid for output: gs://"):
        resolve("hf://a/b", "output", Mounts(), Fetcher("image", {}, 8000), writable=True)


@pytest.mark.parametrize("kind", ["server", "training"])
@pytest.mark.parametrize("scheme", list(URIS))
def test_the_secret_is_referenced_only_by_the_fetch_container(kind: str, scheme: str) -> None:
    children = _render(_with_source(kind, URIS[scheme]))
    pod = _pod(children)
    fetches = pod["spec"]["initContainers"]
    for container in pod["spec"]["containers"]:
        assert all("HF_TOKEN" not in e["name"] for e in container["env"]), "the runtime never sees it"
    for fetch in fetches:
        assert fetch["env"] == [
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": SECRET}},
        ]
    # Nowhere else: not in the ConfigMap, args, annotations, labels, or any other child.
    for child in children:
        text = json.dumps(child)
        expected = len(fetches) if child["kind"] in ("Deployment", "Job") else 0
        assert text.count(SECRET["name"]) == expected, child["kind"]
        assert text.count(SECRET["key"]) == expected, child["kind"]


PODS = [
    *[(p.stem, load(p)) for p in SAMPLE_FILES],
    *[
        (f"{kind}-{scheme}", _with_source(kind, uri, cache={"sizeLimit": "1Gi"}))
        for kind in ("server", "training")
        for scheme, uri in URIS.items()
    ],
    ("server-hf-claim", _with_source("server", URIS["hf"], cache={"claimName": "c"})),
    (
        "training-hf-tokenizer",
        _with_source("training", URIS["gs"], tokenizer={"uri": "hf://google/gemma-2b"}),
    ),
]


@pytest.mark.parametrize(("name", "doc"), PODS, ids=[n for n, _ in PODS])
def test_every_pod_meets_the_restricted_pod_security_standard(name: str, doc: dict[str, Any]) -> None:
    children = _render(doc)
    workloads = [c for c in children if c["kind"] in ("Deployment", "Job", "JobSet")]
    assert workloads
    for workload in workloads:
        spec = workload["spec"]
        if workload["kind"] == "JobSet":
            spec = spec["replicatedJobs"][0]["template"]["spec"]
        assert violations(spec["template"]["spec"]) == [], name


def test_the_checker_catches_what_the_profile_forbids() -> None:
    pod = {
        "hostNetwork": True,
        "securityContext": {},
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "initContainers": [{"name": "fetch-x", "securityContext": {"privileged": True}}],
        "containers": [{"name": "runtime", "ports": [{"containerPort": 80, "hostPort": 80}]}],
    }
    found = "\n".join(violations(pod))
    for expected in (
        "hostNetwork",
        "volume h: hostPath",
        "fetch-x: privileged",
        "fetch-x: allowPrivilegeEscalation",
        "runtime: hostPort",
        "runtime: capabilities",
        "runtime: runAsNonRoot",
        "runtime: seccompProfile",
    ):
        assert expected in found


def test_the_fetch_gets_the_pods_environment_too() -> None:
    proxy = [
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "HF_ENDPOINT", "value": "http://m"},
    ]
    doc = merge(_with_source("server", URIS["hf"]), {"spec": {"pod": {"env": proxy}}})
    (init,) = _pod(_render(doc))["spec"]["initContainers"]
    assert init["env"] == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": SECRET}}, *proxy]
