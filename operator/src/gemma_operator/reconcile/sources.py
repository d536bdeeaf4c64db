"""The SourcesReady condition: where the weights of a resource's pods stand, from the pods themselves.

A pod's hf:// sources are fetched by init containers named ``fetch-<role>``; each serves its progress
(``GET /fetch``: bytes done and total) while it works and leaves its outcome as its termination message
(JSON: ``{"state": "done" | "failed", ...}``). From those and the runtime container:

- Failed: a fetch exited non-zero; the message is the fetch's own error (it names the URI and what to do).
- Downloading: a fetch has not finished; with bytes done/total and rate when the fetch answered.
- Loading: every source is local (downloaded or mounted) and the runtime is reading the weights.
- Loaded: the runtime has the weights (the caller says when: a ready server, a training reporting steps).
- Pending: no pod has started yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gemma_operator.api.conditions import SOURCES_READY

__all__ = ["FETCH_PATH", "SOURCES_READY", "condition", "failure", "fetching"]
from gemma_operator.reconcile.conditions import Cond

FETCH_PREFIX = "fetch-"
FETCH_PATH = "/fetch"

Pod = Mapping[str, Any]


def _name(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("name", "?"))


def _fetch_uris(pod: Pod) -> dict[str, str]:
    """Fetch init container name -> the URI it fetches (its first argument after ``fetch``)."""
    out = {}
    for container in pod.get("spec", {}).get("initContainers", []) or []:
        args = container.get("args") or []
        if str(container.get("name", "")).startswith(FETCH_PREFIX) and len(args) > 1:
            out[str(container["name"])] = str(args[1])
    return out


def _statuses(pod: Pod) -> dict[str, Mapping[str, Any]]:
    return {str(s.get("name")): s for s in pod.get("status", {}).get("initContainerStatuses", []) or []}


def fetching(pod: Pod) -> bool:
    """A fetch init container of ``pod`` is still at work (so its /fetch endpoint may answer)."""
    statuses = _statuses(pod)
    return any("terminated" not in (statuses.get(name, {}).get("state") or {}) for name in _fetch_uris(pod))


def failure(pod: Pod) -> str | None:
    """The error of a fetch that exited non-zero (now, or before a restart), if any."""
    statuses = _statuses(pod)
    for name, uri in _fetch_uris(pod).items():
        status = statuses.get(name, {})
        for key in ("state", "lastState"):
            terminated = (status.get(key) or {}).get("terminated") or {}
            if terminated.get("exitCode") not in (None, 0):
                error = _error(str(terminated.get("message", "")).strip())
                code = terminated["exitCode"]
                return f"pod {_name(pod)}: {name} ({uri}) failed with exit code {code}" + (
                    f": {error}" if error else ""
                )
    return None


def _error(message: str) -> str:
    """The fetch's error from its termination message (JSON), or the message as the kubelet gave it."""
    try:
        document = json.loads(message)
    except ValueError:
        return message
    if isinstance(document, dict) and document.get("error"):
        return str(document["error"])
    return message


def _human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"


def _downloading(pod: Pod, progress: Mapping[str, Any] | None) -> str:
    statuses = _statuses(pod)
    pending = [
        uri
        for name, uri in _fetch_uris(pod).items()
        if "terminated" not in (statuses.get(name, {}).get("state") or {})
    ]
    where = f"on pod {_name(pod)}"
    if not progress or progress.get("uri") not in pending:
        return f"{', '.join(pending)} {where}"
    done, total = progress.get("bytes_done") or 0, progress.get("bytes_total")
    share = f" ({100 * done / total:.0f}%)" if total else ""
    rate = progress.get("bytes_per_second")
    speed = f" at {_human(rate)}/s" if rate else ""
    return f"{progress['uri']}: {_human(done)} / {_human(total)}{share}{speed} {where}"


def condition(
    pods: Sequence[Pod],
    progress: Mapping[str, Mapping[str, Any]],
    loaded: Callable[[Pod], bool],
) -> Cond:
    """SourcesReady from ``pods``, ``progress`` (pod name -> its fetch's /fetch answer) and ``loaded``
    (whether a pod's runtime holds the weights)."""
    live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")]
    for pod in live:
        error = failure(pod)
        if error is not None:
            return Cond(SOURCES_READY, False, "Failed", error)
    busy = [_downloading(p, progress.get(_name(p))) for p in live if fetching(p) and _started(p)]
    if busy:
        return Cond(SOURCES_READY, False, "Downloading", "; ".join(busy))
    started = [p for p in live if _started(p)]
    if not started:
        return Cond(SOURCES_READY, False, "Pending", "no pod has started yet")
    ready = sum(1 for p in started if loaded(p))
    fetched = sorted({uri for p in started for uri in _fetch_uris(p).values()})
    local = f"{', '.join(fetched)} downloaded; " if fetched else ""
    if ready == len(started):
        return Cond(SOURCES_READY, True, "Loaded", f"{local}weights loaded on {ready}/{len(started)} pods")
    return Cond(
        SOURCES_READY,
        False,
        "Loading",
        f"{local}the runtime is loading the weights ({ready}/{len(started)} pods done)",
    )


def _started(pod: Pod) -> bool:
    """Scheduled and running (init containers count): a pod waiting for a node has nothing to report."""
    return pod.get("status", {}).get("phase") in ("Pending", "Running", "Succeeded") and bool(
        pod.get("status", {}).get("podIP") or pod.get("status", {}).get("initContainerStatuses")
    )
