"""Kubernetes-style conditions and the summary phase of a Checkpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.times import format_time

Condition = dict[str, Any]

PHASE_PENDING = "Pending"
PHASE_SAVING = "Saving"
PHASE_READY = "Ready"
PHASE_DEGRADED = "Degraded"
PHASE_INVALID = "Invalid"
PHASE_DELETING = "Deleting"


def make_condition(
    ctype: str, ok: bool, reason: str, message: str, *, now: dt.datetime, generation: int | None
) -> Condition:
    """A condition of ``ctype`` with status True/False."""
    cond: Condition = {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def find(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    """The condition of ``ctype``, or None."""
    for cond in conditions or ():
        if cond.get("type") == ctype:
            return cond
    return None


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when two conditions say the same thing (transition times aside)."""
    if a is None or b is None:
        return a is b
    keys = ("status", "reason", "message", "observedGeneration")
    return all(a.get(k) == b.get(k) for k in keys)


def upsert(conditions: Sequence[Mapping[str, Any]] | None, new: Condition) -> list[Condition]:
    """Replace or add ``new``; keep the old lastTransitionTime while the status is unchanged."""
    result: list[Condition] = []
    found = False
    for cond in conditions or ():
        if cond.get("type") != new["type"]:
            result.append(dict(cond))
            continue
        found = True
        merged = dict(new)
        if cond.get("status") == new["status"] and cond.get("lastTransitionTime"):
            merged["lastTransitionTime"] = cond["lastTransitionTime"]
        result.append(merged)
    if not found:
        result.append(dict(new))
    return result


def is_true(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> bool | None:
    """True/False per the condition's status; None when absent or Unknown."""
    cond = find(conditions, ctype)
    if cond is None or cond.get("status") not in ("True", "False"):
        return None
    return cond.get("status") == "True"


def derive_phase(
    status: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]] | None, deleting: bool
) -> str:
    """One word for ``kubectl get ckpt``: Deleting, Invalid, Degraded, Saving, Ready or Pending."""
    if deleting:
        return PHASE_DELETING
    if is_true(conditions, contract.COND_VALID) is False:
        return PHASE_INVALID
    if is_true(conditions, contract.COND_DEGRADED):
        return PHASE_DEGRADED
    if status.get(contract.SAVE_IN_PROGRESS):
        return PHASE_SAVING
    if status.get(contract.LATEST_COMMITTED) is not None or status.get(contract.SAVED_ITERATIONS):
        return PHASE_READY
    return PHASE_PENDING
