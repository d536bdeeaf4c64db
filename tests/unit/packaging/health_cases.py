"""Statuses for every phase of both kinds, made by the operator's own pure status functions, with the
Argo CD health each must get. They are written as Argo CD test data (``health_test.yaml`` and
``testdata/*.yaml`` beside each ``health.lua``, the layout of argo-cd's resource_customizations) by
``python -m tests.unit.packaging.health_cases``; the tests check that the files match this module."""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gemma_operator.api.validation import parse
from gemma_operator.reconcile import serving, training
from gemma_operator.render.placement import resolve
from tests.api_cases import REPO, sample

ARGOCD = REPO / "manifests" / "argocd" / "gemma.ai"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
WAITING = "Waiting for the operator to report status"
SCALED_DOWN = "spec.suspend is true: scaled to zero"


def _accelerator(kind_sample: str) -> dict[str, Any]:
    """The accelerator as the operator resolves it for the sample (status.accelerator)."""
    spec = parse(sample(kind_sample)).spec
    return dict(resolve(spec.accelerator).to_api())


SERVER_ACCELERATOR = _accelerator("server-tiny-cpu")
TRAINING_ACCELERATOR = _accelerator("training-tiny-cpu")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # file stem under testdata/
    obj: dict[str, Any]
    health: str
    message: str


def _obj(kind_sample: str, status: Mapping[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj = sample(kind_sample)
    obj["metadata"].update({"namespace": "default", "generation": generation})
    if status is not None:
        obj["status"] = dict(status)
    return obj


def _deployment(ready: int, want: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": want,
            "updatedReplicas": want,
            "readyReplicas": ready,
        },
    }


def _server(observed: serving.Observed, suspended: bool = False) -> dict[str, Any]:
    return serving.server_status(
        previous={},
        generation=1,
        suspended=suspended,
        observed=observed,
        selector="gemma.ai/server=tiny",
        endpoint="http://tiny.default.svc:8000/v1",
        accelerator=SERVER_ACCELERATOR,
        now=NOW,
    )


UNSCHEDULABLE_POD = {
    "metadata": {"name": "tiny-0"},
    "status": {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient google.com/tpu.",
            }
        ]
    },
}


DOWNLOADING_POD = {
    "metadata": {"name": "tiny-0"},
    "spec": {"initContainers": [{"name": "fetch-model", "args": ["fetch", "hf://google/gemma-2b"]}]},
    "status": {
        "phase": "Pending",
        "podIP": "10.0.0.5",
        "initContainerStatuses": [{"name": "fetch-model", "state": {"running": {}}}],
    },
}
DOWNLOAD = {"uri": "hf://google/gemma-2b", "bytes_done": 2_500_000_000, "bytes_total": 5_000_000_000}


def server_cases() -> list[Case]:
    ready = _server(serving.Observed(desired_replicas=1, deployment=_deployment(1), pods=[]))
    rolling = _server(serving.Observed(desired_replicas=1, deployment=_deployment(0), pods=[]))
    stuck = _server(serving.Observed(desired_replicas=1, deployment=_deployment(0), pods=[UNSCHEDULABLE_POD]))
    suspended = _server(
        serving.Observed(desired_replicas=0, deployment=_deployment(0, 0), pods=[]), suspended=True
    )
    downloading = _server(
        serving.Observed(
            desired_replicas=1,
            deployment=_deployment(0),
            pods=[DOWNLOADING_POD],
            fetches={"tiny-0": DOWNLOAD},
        )
    )
    zero = _server(serving.Observed(desired_replicas=0, deployment=_deployment(0, 0), pods=[]))
    invalid = serving.invalid_status({}, 1, ["spec.replicas: must be >= 0"], NOW)
    unschedulable = (
        "Unschedulable: pod tiny-0 cannot be scheduled: "
        "0/3 nodes are available: 3 Insufficient google.com/tpu."
    )
    return [
        Case("no-status", _obj("server-tiny-cpu", None), "Progressing", WAITING),
        Case("ready", _obj("server-tiny-cpu", ready), "Healthy", "1/1 replicas serve"),
        Case("rolling-out", _obj("server-tiny-cpu", rolling), "Progressing", "1/1 updated, 0/1 ready"),
        Case(
            "downloading",
            _obj("server-tiny-cpu", downloading),
            "Progressing",
            "hf://google/gemma-2b: 2.50 GB / 5.00 GB (50%) on pod tiny-0",
        ),
        Case("unschedulable", _obj("server-tiny-cpu", stuck), "Degraded", unschedulable),
        Case("scaled-to-zero", _obj("server-tiny-cpu", zero), "Healthy", "spec.replicas is 0"),
        Case("suspended", _obj("server-tiny-cpu", suspended), "Suspended", SCALED_DOWN),
        Case(
            "invalid-spec",
            _obj("server-tiny-cpu", invalid),
            "Degraded",
            "InvalidSpec: invalid spec: spec.replicas: must be >= 0",
        ),
        Case(
            "stale-generation",
            _obj("server-tiny-cpu", ready, generation=2),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
    ]  # fmt: skip


def _pod(phase: str) -> dict[str, Any]:
    return {"metadata": {"name": "tiny-train-a0-0", "annotations": {}}, "status": {"phase": phase}}


def _job(condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {"metadata": {"name": "tiny-train-a0"}, "status": {"conditions": conditions}}


def _training(
    observed: training.Observed,
    *,
    previous: Mapping[str, Any] | None = None,
    suspended: bool = False,
    blocked: str | None = None,
) -> dict[str, Any]:
    return training.decide(
        previous=previous or {},
        generation=1,
        suspended=suspended,
        max_restarts=0,
        observed=observed,
        now=NOW,
        accelerator=TRAINING_ACCELERATOR,
        blocked=blocked,
    ).status


def training_cases() -> list[Case]:
    pending = _training(training.Observed(hosts=1, workload=_job(None), pods=[_pod("Pending")]))
    running = _training(training.Observed(hosts=1, workload=_job(None), pods=[_pod("Running")]))
    succeeded = _training(training.Observed(hosts=1, workload=_job("Complete"), pods=[_pod("Succeeded")]))
    failed_pod = {
        **_pod("Failed"),
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
        },
    }
    exhausted = _training(training.Observed(hosts=1, workload=_job("Failed"), pods=[failed_pod]))
    suspended = _training(training.Observed(hosts=1, workload=_job(None), pods=[]), suspended=True)
    blocked = _training(training.Observed(hosts=2, workload=None, pods=[]), blocked="no JobSet API")
    invalid = training.invalid_status({}, 1, ["spec.training.steps: must be > 0"], NOW)
    exhausted_message = (
        "MaxRestartsExceeded: failurePolicy.maxRestarts (0) exhausted; "
        "last failure: PodFailed (exit code 1, Error) on pod tiny-train-a0-0"
    )
    return [
        Case("no-status", _obj("training-tiny-cpu", None), "Progressing", WAITING),
        Case("pending", _obj("training-tiny-cpu", pending), "Progressing", "0/1 hosts running"),
        Case("running", _obj("training-tiny-cpu", running), "Progressing", "1 hosts running"),
        Case("succeeded", _obj("training-tiny-cpu", succeeded), "Healthy", "every host finished"),
        Case("max-restarts-exceeded", _obj("training-tiny-cpu", exhausted), "Degraded", exhausted_message),
        Case("blocked", _obj("training-tiny-cpu", blocked), "Degraded", "Blocked: no JobSet API"),
        Case(
            "suspended",
            _obj("training-tiny-cpu", suspended),
            "Suspended",
            "spec.suspend is true: pods stopped, progress kept",
        ),
        Case(
            "invalid-spec",
            _obj("training-tiny-cpu", invalid),
            "Degraded",
            "InvalidSpec: invalid spec: spec.training.steps: must be > 0",
        ),
        Case(
            "stale-generation",
            _obj("training-tiny-cpu", succeeded, generation=2),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
    ]  # fmt: skip


CASES = {"GemmaServer": server_cases, "GemmaTraining": training_cases}


def render(kind: str) -> dict[Path, str]:
    """The Argo CD test files of ``kind``: health_test.yaml and one testdata file per case."""
    folder = ARGOCD / kind
    files: dict[Path, str] = {}
    tests = []
    for case in CASES[kind]():
        path = folder / "testdata" / f"{case.name}.yaml"
        files[path] = yaml.safe_dump(case.obj, sort_keys=False)
        tests.append(
            {
                "healthStatus": {"status": case.health, "message": case.message},
                "inputPath": f"testdata/{case.name}.yaml",
            }
        )
    files[folder / "health_test.yaml"] = yaml.safe_dump({"tests": tests}, sort_keys=False)
    return files


def main() -> int:
    for kind in CASES:
        for path, text in render(kind).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
