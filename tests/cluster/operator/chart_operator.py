"""The operator as the chart's ServiceAccount on a test's own cluster: our CRDs, the RBAC the chart renders
for the given values, and the operator process with that account's token, so the chart's rules are
exercised (a refusal by RBAC in its log fails the test)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.cluster.chart.helm import Helm
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.jobset import wait_established
from tests.cluster.harness.operator import OperatorProcess, as_service_account
from tests.unit.packaging.generate import NAMESPACE

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
REPO = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def chart_operator(
    cluster: LocalCluster, values: Sequence[str] = (), settings: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """Our CRDs, the chart's RBAC for ``values`` (helm --set), and the operator as that ServiceAccount
    with ``settings`` (GEMMA_OPERATOR_* variables)."""
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.kubectl("create", "namespace", NAMESPACE)
    helm = Helm(Path(cluster.binary("helm")), cluster.workdir / "helm")
    docs = [d for d in helm.template(*values) if d["kind"] in RBAC_KINDS]
    cluster.kubectl(
        "apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    wait_established(cluster, "gemmaservers.gemma.ai")
    with as_service_account(cluster, NAMESPACE, settings) as process:
        yield process
