"""`helm uninstall` of the operator running from its image leaves nothing of the release but the CRDs
(and so every GemmaServer and GemmaTraining); it runs last in this tier."""

from __future__ import annotations

from tests.cluster.chart.helm import Helm
from tests.cluster.harness.control_plane import LocalCluster
from tests.unit.packaging.generate import NAMESPACE, RELEASE


def test_uninstall_leaves_only_the_crds(installed: LocalCluster, helm: Helm) -> None:
    helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m", timeout=240)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    # The operator's pod goes after its ReplicaSet, once kopf has stopped (its grace period).
    installed.kubectl(
        "-n", NAMESPACE, "wait", "--for=delete", "pod", "-l", selector, "--timeout=120s", check=False
    )
    kinds = "all,serviceaccounts,configmaps,secrets,roles,rolebindings,clusterroles,clusterrolebindings"
    left = installed.kubectl("get", kinds, "-A", "-l", selector, "-o", "name")
    assert not left.strip(), left
    assert not installed.kubectl("-n", NAMESPACE, "get", "pods", "-o", "name").strip()
    crds = installed.kubectl("get", "crds", "-o", "name")
    assert "gemmaservers.gemma.ai" in crds
    assert "gemmatrainings.gemma.ai" in crds
