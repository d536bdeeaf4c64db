"""The runtime pod's security: restricted by default; ``spec.pod.runAsRoot`` makes the runtime container
alone UID 0, with nothing else given back (the baseline Pod Security Standard still holds)."""

from __future__ import annotations

from typing import Any

import pytest

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.pods import CONTAINER_SECURITY, POD_SECURITY
from gemma_operator.render.serving import render_server
from gemma_operator.render.training import render_workload
from tests.api_cases import merge, sample
from tests.unit.operator.render.restricted import violations


def _pod(name: str, **pod: Any) -> dict[str, Any]:
    doc = merge(
        sample(name), {"metadata": {"namespace": "team", "uid": PLACEHOLDER_UID}, "spec": {"pod": pod}}
    )
    obj = parse(doc)
    children = (
        render_server(doc, obj, Settings())
        if doc["kind"] == "GemmaServer"
        else render_workload(doc, obj, Settings(), 0)
    )
    workload = next(c for c in children if c["kind"] in ("Deployment", "Job"))
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("name", ["server-gemma-7b-v5e", "training-gemma-2b-v5e"])
def test_tpu_pods_are_restricted_by_default(name: str) -> None:
    pod = _pod(name)
    assert pod["securityContext"] == POD_SECURITY
    assert pod["containers"][0]["securityContext"] == CONTAINER_SECURITY
    assert violations(pod) == []


@pytest.mark.parametrize("name", ["server-gemma-7b-v5e", "training-gemma-2b-v5e"])
def test_run_as_root_gives_the_runtime_uid_0_and_nothing_else(name: str) -> None:
    pod = _pod(name, runAsRoot=True)
    runtime = pod["containers"][0]["securityContext"]
    assert (runtime["runAsUser"], runtime["runAsGroup"], runtime["runAsNonRoot"]) == (0, 0, False)
    assert runtime["capabilities"] == {"drop": ["ALL"]}
    assert runtime["allowPrivilegeEscalation"] is False
    assert runtime["readOnlyRootFilesystem"] is True
    assert "privileged" not in runtime
    # The pod keeps its fsGroup (so root still writes the volumes) and its fetch containers stay non-root.
    assert pod["securityContext"] == POD_SECURITY
    assert all(c["securityContext"] == CONTAINER_SECURITY for c in pod["initContainers"])
    # Only the restricted profile's user rules are broken, for the runtime alone: baseline holds.
    assert violations(pod) == ["runtime: runAsNonRoot must be true", "runtime: runAsUser 0"]
