"""Counting a training job's restarts from the pods labelled ``cairn.dev/checkpoint=<name>``.

A restart is either a container restart (a pod's summed ``restartCount`` grows) or a pod
replacement (a new pod appears after another one of the job terminated). What the operator has
seen is kept in a bounded *ledger* (pod uid -> restarts, phase, gone) stored on the Checkpoint
itself, and ``status.restarts.count`` is a pure function of the ledger: an operator restarted at
any point re-derives the same count and never double-counts a pod it has already seen.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource.times import format_time, parse_time

Ledger = dict[str, Any]
_FINISHED = frozenset({"Succeeded", "Failed"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodObservation:
    """What one watch event says about one pod."""

    uid: str
    """The pod's uid (a replacement pod has a new one)."""
    name: str
    """The pod's name (for messages)."""
    restarts: int
    """Sum of its containers' restartCount."""
    phase: str
    """The pod's phase."""
    gone: bool
    """Deleted, being deleted, or failed for good."""


def observe_pod(pod: Mapping[str, Any], *, deleted: bool) -> PodObservation:
    """Summarise a pod body from a watch event."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    counts = [c.get("restartCount", 0) for c in status.get("containerStatuses") or ()]
    phase = str(status.get("phase", "Pending"))
    return PodObservation(
        uid=str(meta.get("uid") or meta.get("name")),
        name=str(meta.get("name", "")),
        restarts=sum(c for c in counts if isinstance(c, int)),
        phase=phase,
        gone=deleted or bool(meta.get("deletionTimestamp")) or phase == "Failed",
    )


def load_ledger(raw: str | None) -> Ledger:
    """Parse the stored ledger; an absent or unreadable one starts empty."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    pods = data.get("pods") if isinstance(data, dict) else None
    return {
        "base": int(data.get("base", 0)) if isinstance(data, dict) else 0,
        "last": data.get("last") if isinstance(data, dict) else None,
        "pods": dict(pods) if isinstance(pods, dict) else {},
    }


def dump_ledger(ledger: Ledger) -> str:
    """Compact JSON for the annotation."""
    return json.dumps(ledger, separators=(",", ":"), sort_keys=False)


def _contribution(entry: Mapping[str, Any]) -> int:
    return int(entry.get("r", 0)) + (1 if entry.get("replaced") else 0)


def restart_count(ledger: Ledger) -> int:
    """Container restarts plus pod replacements ever observed."""
    return int(ledger["base"]) + sum(_contribution(e) for e in ledger["pods"].values())


def _claim_replacement(pods: dict[str, Any]) -> str | None:
    """Mark the oldest terminated, not yet replaced pod as replaced; its name, if any."""
    for entry in pods.values():
        if entry.get("gone") and not entry.get("replaced"):
            entry["replaced"] = True
            return str(entry.get("n", "?"))
    return None


def _bound(ledger: Ledger, max_pods: int) -> None:
    pods: dict[str, Any] = ledger["pods"]
    while len(pods) > max_pods:
        victim = next((u for u, e in pods.items() if e.get("gone")), next(iter(pods)))
        ledger["base"] += _contribution(pods.pop(victim))


def record(
    ledger: Ledger, obs: PodObservation, *, now: dt.datetime, max_pods: int
) -> tuple[Ledger, list[str]]:
    """The ledger after ``obs``, and one message per restart it reveals (empty: nothing new)."""
    new: Ledger = json.loads(dump_ledger(ledger))
    pods: dict[str, Any] = new["pods"]
    entry = pods.get(obs.uid)
    messages: list[str] = []
    if entry is None:
        # A pod name is unique among live pods: an older uid of this name is gone, even when
        # its DELETED event was coalesced with this one's ADDED or missed during a restart.
        for other in pods.values():
            if other.get("n") == obs.name:
                other["gone"] = True
        replaced = None if obs.gone else _claim_replacement(pods)
        if replaced is not None:
            messages.append(f"pod {obs.name} replaced pod {replaced}")
        entry = pods[obs.uid] = {"n": obs.name, "r": 0}
    if obs.restarts > int(entry.get("r", 0)):
        messages.append(
            f"pod {obs.name}: {obs.restarts - int(entry.get('r', 0))} container restart(s) "
            f"(restartCount now {obs.restarts})"
        )
        entry["r"] = obs.restarts
    entry["p"] = obs.phase
    entry["gone"] = bool(entry.get("gone")) or obs.gone
    if messages:
        new["last"] = format_time(now)
    _bound(new, max_pods)
    return new, messages


def job_running(ledger: Ledger) -> bool | None:
    """True if a known pod is live, False if all known pods finished, None if none is known."""
    pods = ledger["pods"].values()
    if not pods:
        return None
    return any(not e.get("gone") and e.get("p") not in _FINISHED for e in pods)


def restarts_status(ledger: Ledger, last_resume: Mapping[str, Any] | None) -> dict[str, Any]:
    """``status.restarts``; ``lastResumedIteration`` once the agent resumed after the restart."""
    result: dict[str, Any] = {"count": restart_count(ledger)}
    last = ledger.get("last")
    if last:
        result["lastRestartTime"] = last
    resumed_at = parse_time((last_resume or {}).get("time"))
    restarted_at = parse_time(last)
    iteration = (last_resume or {}).get("iteration")
    if restarted_at and resumed_at and isinstance(iteration, int) and resumed_at >= restarted_at:
        result["lastResumedIteration"] = iteration
    return result
