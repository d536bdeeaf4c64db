"""Rendering a GemmaServer: values that cannot inject YAML, placement on TPU, GPU and CPU pools, sources
per URI scheme, the config hash that rolls pods, the HPA only with autoscaling, suspend, security."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.serving import render_server
from tests.api_cases import SAMPLE_FILES, load, merge, sample

GOLDEN = Path(__file__).parent / "golden"
SERVER_SAMPLES = [p for p in SAMPLE_FILES if load(p)["kind"] == "GemmaServer"]


def _render(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    doc = merge(doc, {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}})
    return {c["kind"]: c for c in render_server(doc, parse(doc), Settings())}


def _keys(node: Any) -> set[str]:
    """Every mapping key anywhere in ``node``."""
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def test_values_cannot_inject_yaml() -> None:
    nasty = 'x"\n  injected: true\n- {evil: 1}'
    doc = merge(
        sample("server-tiny-cpu"),
        {
            "spec": {
                "pod": {
                    "env": [{"name": "A", "value": nasty}],
                    "annotations": {"note": nasty},
                    "labels": {"team": "a"},
                }
            }
        },
    )
    children = _render(doc)
    container = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "A", "value": nasty} in container["env"]
    assert children["Deployment"]["spec"]["template"]["metadata"]["annotations"]["note"] == nasty
    assert not {"injected", "evil"} & _keys(children)
    assert set(children["Deployment"]["spec"]) == {
        "replicas", "revisionHistoryLimit", "progressDeadlineSeconds", "selector", "strategy", "template",
    }  # fmt: skip


def test_any_unicode_value_renders_as_written() -> None:
    # Beyond U+FFFF JSON writes a surrogate pair, which YAML would read back as two lone surrogates; NEL
    # and U+2028 are line breaks to YAML 1.1 and C1 controls cannot appear raw.
    value = "\U0001f680 team \x85 \u2028 \x9f \ufffe \u00e9"
    doc = merge(sample("server-tiny-cpu"), {"spec": {"pod": {"annotations": {"note": value}}}})
    template = _render(doc)["Deployment"]["spec"]["template"]
    assert template["metadata"]["annotations"]["note"] == value


def test_tpu_placement_asks_for_one_hosts_chips() -> None:
    pod = _render(sample("server-gemma-7b-v5e"))["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x4",
        "node.kubernetes.io/instance-type": "ct5lp-hightpu-8t",
    }
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"google.com/tpu": 8},
        "limits": {"google.com/tpu": 8},
    }
    assert pod["serviceAccountName"] == "gemma-reader"


def test_every_pod_names_its_jax_platform_and_leaves_a_termination_message() -> None:
    # Named for accelerators too, so a pod whose TPU or GPU is missing fails instead of using the CPU.
    gpu = merge(sample("server-tiny-cpu"), {"spec": {"accelerator": {"type": "nvidia-l4", "count": 2}}})
    for doc, platform in [
        (sample("server-gemma-7b-v5e"), "tpu"),
        (gpu, "cuda"),
        (sample("server-tiny-cpu"), "cpu"),
    ]:
        container = _render(doc)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "JAX_PLATFORMS", "value": platform} in container["env"]
        assert container["args"][-2:] == ["--message-file", "/dev/termination-log"]


def test_gpu_spot_and_reservation_placement() -> None:
    doc = merge(
        sample("server-tiny-cpu"),
        {"spec": {"accelerator": {"type": "nvidia-l4", "count": 2, "reservation": "r1"}}},
    )
    pod = _render(doc)["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert pod["nodeSelector"]["cloud.google.com/reservation-name"] == "r1"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    spot = _render(merge(sample("server-gemma3-27b-v5e"), {"spec": {"accelerator": {"spot": True}}}))
    spot = spot["Deployment"]["spec"]["template"]["spec"]
    assert spot["nodeSelector"]["cloud.google.com/gke-spot"] == "true"


def test_cpu_pods_get_requests_and_user_resources_win() -> None:
    resources = _render(sample("server-tiny-cpu"))["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    assert resources == {"requests": {"cpu": 1, "memory": "2Gi"}}


def test_sources_per_scheme() -> None:
    pvc = _render(sample("server-gemma3-27b-v5e"))
    assert (
        "checkpoint: /gemma/sources/pvc-gemma-weights/gemma-3-27b-it"
        in pvc["ConfigMap"]["data"]["runtime.yaml"]
    )
    volumes = {v["name"]: v for v in pvc["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["src-pvc-gemma-weights"]
    assert claim["persistentVolumeClaim"] == {"claimName": "gemma-weights", "readOnly": True}
    gcs = _render(sample("server-gemma-7b-v5e"))["Deployment"]["spec"]["template"]
    assert gcs["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    volumes = {v["name"]: v for v in gcs["spec"]["volumes"]}
    assert volumes["src-gcs-my-models"]["csi"]["volumeAttributes"]["bucketName"] == "my-models"
    hf = _render(load(SAMPLE_FILES[0]))  # manifests/gemma-server.yaml: hf:// with a token Secret
    (init,) = hf["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][:2] == ["fetch", "hf://google/gemma-2-9b-it"]
    assert init["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    ]
    assert "hf-token" not in hf["ConfigMap"]["data"]["runtime.yaml"]


def test_config_change_changes_the_pod_template_hash() -> None:
    before = _render(sample("server-tiny-cpu"))["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    after = _render(merge(sample("server-tiny-cpu"), {"spec": {"serving": {"maxBatchSize": 4}}}))
    assert (
        after["Deployment"]["spec"]["template"]["metadata"]["annotations"]["gemma.ai/config-hash"]
        != before["gemma.ai/config-hash"]
    )


def test_autoscaling_adds_an_hpa_on_the_gemmaserver_scale_subresource() -> None:
    children = _render(sample("server-gemma2-9b-int8-v6e"))
    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "gemma.ai/v1alpha1",
        "kind": "GemmaServer",
        "name": "gemma2-9b-int8",
    }
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "gemma_requests_waiting"
    assert "HorizontalPodAutoscaler" not in _render(sample("server-tiny-cpu"))


def test_suspend_scales_to_zero() -> None:
    children = _render(merge(sample("server-tiny-cpu"), {"spec": {"suspend": True, "replicas": 3}}))
    assert children["Deployment"]["spec"]["replicas"] == 0


def test_restricted_security_context() -> None:
    pod = _render(sample("server-tiny-cpu"))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_a_short_sequence_without_a_prefill_length_gets_a_chunk_that_fits_it() -> None:

    for sequence, chunk in ((512, 512), (4096, 1024)):
        doc = merge(sample("server-tiny-cpu"), {"spec": {"serving": {"maxSequenceLength": sequence}}})
        doc["spec"]["serving"].pop("maxPrefillLength", None)
        config = yaml.safe_load(_render(doc)["ConfigMap"]["data"]["runtime.yaml"])
        assert (config["max_sequence_length"], config["max_prefill_length"]) == (sequence, chunk)
