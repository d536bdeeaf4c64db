"""Pure parts of the cluster harness: the staging list read from a release's go.mod, the fake GKE
node shapes, kwok stages whose selectors never overlap, and gcsfuse flags made from a CSI volume's mount
options as GKE's sidecar makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import binaries, gcsfuse, nodes
from tests.cluster.harness.control_plane import STAGES_FILE

GOMOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/spf13/cobra v1.10.2
\tk8s.io/api v0.0.0
\tk8s.io/kubectl v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kubectl => ./staging/src/k8s.io/kubectl
\tk8s.io/sample-cli-plugin => ./staging/src/k8s.io/sample-cli-plugin
)
"""


def test_staging_replacements_are_the_required_staged_modules() -> None:
    assert binaries.staging_replacements(GOMOD) == ["k8s.io/api", "k8s.io/kubectl"]


def test_cache_folder_is_per_version_and_outside_the_repo(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("GEMMA_K8S_BIN", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    versions = binaries.Versions()
    assert binaries.find_binaries(versions) is None
    folder = tmp_path / "gemma-operator" / "k8s" / versions.cache_key
    folder.mkdir(parents=True)
    for name in binaries.ALL_BINARIES:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    assert binaries.find_binaries(versions) == folder


def test_an_explicit_binary_folder_wins(tmp_path: Path, monkeypatch) -> None:
    for name in binaries.ALL_BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("GEMMA_K8S_BIN", str(tmp_path))
    assert binaries.find_binaries() == tmp_path
    (tmp_path / "kwok").unlink()  # an incomplete folder is not used
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert binaries.find_binaries() is None


def test_tpu_nodes_carry_gke_labels_taint_and_chip_capacity() -> None:
    names = nodes.V5E_4X4.node_names()
    assert len(names) == 4
    node = nodes.V5E_4X4.nodes()[0]
    labels = node["metadata"]["labels"]
    assert labels["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
    assert labels["cloud.google.com/gke-tpu-topology"] == "4x4"
    assert labels["cloud.google.com/gke-nodepool"] == "v5e-4x4"
    assert labels["node.kubernetes.io/instance-type"] == "ct5lp-hightpu-4t"
    assert node["spec"]["taints"] == [{"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}]
    assert node["status"]["capacity"]["google.com/tpu"] == "4"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_default_pools_cover_the_issue_shapes() -> None:
    shapes = {
        (
            p.labels.get("cloud.google.com/gke-tpu-accelerator"),
            p.labels.get("cloud.google.com/gke-tpu-topology"),
        )
        for p in nodes.DEFAULT_POOLS
    }
    assert {
        ("tpu-v5-lite-podslice", "2x4"),
        ("tpu-v5-lite-podslice", "4x4"),
        ("tpu-v5p-slice", "2x2x2"),
        ("tpu-v6e-slice", "2x4"),
    } <= shapes
    assert nodes.L4.extended == {"nvidia.com/gpu": "2"}
    assert sum(p.hosts for p in nodes.DEFAULT_POOLS) == 15
    # Two v5e 2x4 pools with the same TPU labels: 8-chip single-host and 4-chip two-host machines.
    v5e_2x4 = [
        p.machine_type
        for p in nodes.DEFAULT_POOLS
        if p.labels.get("cloud.google.com/gke-tpu-topology") == "2x4"
        and p.labels.get("cloud.google.com/gke-tpu-accelerator") == "tpu-v5-lite-podslice"
    ]
    assert sorted(v5e_2x4) == ["ct5lp-hightpu-4t", "ct5lp-hightpu-8t"]


def _stages() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc["spec"] for doc in yaml.safe_load_all(STAGES_FILE.read_text())}


def test_pod_end_stages_are_mutually_exclusive() -> None:
    stages = _stages()
    assert set(stages) == {
        "node-initialize",
        "node-heartbeat",
        "pod-ready",
        "pod-init-hold",
        "pod-init-release",
        "pod-init-fail",
        "pod-succeed",
        "pod-fail",
        "pod-crash-loop",
        "pod-delete",
    }
    succeed = {e["key"]: e["operator"] for e in stages["pod-succeed"]["selector"]["matchExpressions"]}
    fail = {e["key"]: e["operator"] for e in stages["pod-fail"]["selector"]["matchExpressions"]}
    key = '.metadata.annotations["kwok.gemma.ai/fail-exit-code"]'
    assert (succeed[key], fail[key]) == ("DoesNotExist", "Exists")
    crash = {e["key"]: e["operator"] for e in stages["pod-crash-loop"]["selector"]["matchExpressions"]}
    succeeding = '.metadata.annotations["kwok.gemma.ai/succeed-after"]'
    assert (crash[key], crash[succeeding], succeed[succeeding]) == ("DoesNotExist", "DoesNotExist", "Exists")
    ready = {e["key"]: e["operator"] for e in stages["pod-ready"]["selector"]["matchExpressions"]}
    assert ready[".status.podIP"] == "DoesNotExist"  # never matches a Running pod, which has an IP
    hold = {e["key"]: e["operator"] for e in stages["pod-init-hold"]["selector"]["matchExpressions"]}
    release = {e["key"]: e["operator"] for e in stages["pod-init-release"]["selector"]["matchExpressions"]}
    held = '.metadata.annotations["kwok.gemma.ai/hold-init"]'
    assert (ready[held], hold[held], hold[".status.podIP"]) == ("DoesNotExist", "Exists", "DoesNotExist")
    assert release[".status.podIP"] == "Exists"  # only after the hold gave the pod its IP
    assert release['.metadata.annotations["kwok.gemma.ai/init-done"]'] == "Exists"
    failing = {e["key"]: e["operator"] for e in stages["pod-init-fail"]["selector"]["matchExpressions"]}
    assert failing['.metadata.annotations["kwok.gemma.ai/init-done"]'] == "DoesNotExist"
    assert stages["pod-delete"]["next"]["delete"] is True


def test_mount_options_become_gcsfuse_flags_as_gkes_sidecar_makes_them() -> None:
    flags = gcsfuse.sidecar_flags("implicit-dirs,rename-dir-limit=200000")
    assert flags == ["--implicit-dirs", "--rename-dir-limit=200000"]
    with pytest.raises(ValueError, match="metadata-cache:ttl-secs:-1"):
        gcsfuse.sidecar_flags("implicit-dirs,metadata-cache:ttl-secs:-1")
