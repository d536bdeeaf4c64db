"""Condition bookkeeping in Kubernetes API conventions: a transition time that moves only when the
status does, observedGeneration on every condition, and the Events a transition deserves."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class Cond:
    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else "True" if self.status else "False"


def timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    previous: Sequence[Mapping[str, Any]], new: Iterable[Cond], generation: int, now: datetime.datetime
) -> list[dict[str, Any]]:
    """Wire-format conditions; ``lastTransitionTime`` is kept when the status did not change."""
    old = {c.get("type"): c for c in previous}
    out = []
    for cond in new:
        before = old.get(cond.type)
        changed = (
            before is None or before.get("status") != cond.status_text or "lastTransitionTime" not in before
        )
        out.append(
            {
                "type": cond.type,
                "status": cond.status_text,
                "reason": cond.reason,
                "message": cond.message[:32768],
                "lastTransitionTime": timestamp(now)
                if changed or before is None
                else before["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    return out


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(
    previous: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    warnings: Mapping[str, bool],
    announced: Collection[str] = (),
) -> list[EventSpec]:
    """One Event per condition whose status changed, or whose reason changed while it is True or in its
    bad state. ``warnings[type]`` says which status of that condition is bad news (e.g. Degraded=True,
    Ready=False); a condition of an ``announced`` type is news from its first status on, False too (it
    appears with an opt-in field, not with the resource)."""
    old = {c.get("type"): c for c in previous}
    events = []
    for cond in current:
        before = old.get(cond["type"])
        bad = warnings.get(cond["type"])
        if before is not None and before.get("status") == cond["status"]:
            if before.get("reason") == cond["reason"]:
                continue
            # A False condition that is not bad news (Failed=False while a run goes from Running to
            # Pending) carries the phase's reason only for readers of the status: not an Event.
            if cond["status"] != "True" and bad is not False:
                continue
        if before is None and cond["status"] != "True" and cond["type"] not in announced:
            continue  # a new resource starts with everything False: nothing to say yet
        kind: Literal["Normal", "Warning"] = (
            "Warning" if bad is not None and (cond["status"] == "True") == bad else "Normal"
        )
        events.append(
            EventSpec(kind, cond["reason"], cond["message"] or f"{cond['type']} is {cond['status']}")
        )
    return events
