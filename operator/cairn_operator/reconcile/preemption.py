"""Save before preemption: what announces the end of a job's pods, and the save it asks for. Pure.

A pod usually hears of its end (SIGTERM) after the cluster decided it: a node is cordoned or
tainted ``NoExecute`` before it is drained, Kueue marks a ``Workload`` Evicted before it suspends
the job, an eviction or deletion sets ``deletionTimestamp`` before the kubelet signals. Each of
these is a *signal* with a deterministic key (the same announcement read twice, e.g. after an
operator restart, has the same key), so it is acted on once; ``preemption_signals`` reads them.

The operator answers a signal by asking the job for a persistent save at its next step boundary
(``spec.saveNow``, request id ``preempt-<key>``). One preemption is one request: a signal that
arrives while a request is still unanswered (a drain cordons the node, then evicts each pod)
joins that request instead of asking again; a signal after the answer asks for a new save, which
then holds the steps trained since.

What was announced is kept in a small ledger (an annotation on the Checkpoint, written together
with ``spec.saveNow`` in one patch), from which ``status.lastPreemption`` is derived, level-
triggered, with the job's answer (``status.lastSaveRequest``) once it comes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from cairn_agent.resource import contract, save_request
from cairn_agent.resource.times import format_time, parse_time

SignalReason = Literal[
    "PodDeleting",
    "PodEvicted",
    "NodeCordoned",
    "NodeTainted",
    "WorkloadEvicted",
    "WorkloadPreempted",
    "JobSuspended",
    "JobSetSuspended",
]
"""What announced a preemption (``status.lastPreemption.reason``, the metric's ``reason``)."""
SIGNAL_REASONS: Final[tuple[SignalReason, ...]] = get_args(SignalReason)

Outcome = Literal["Pending", "Committed", "Failed"]

LEDGER_ANNOTATION: Final = f"{contract.GROUP}/preemptions"
REQUEST_PREFIX: Final = "preempt-"
SIGTERM_PREFIX: Final = "sigterm-"
"""The agent answers a SIGTERM with a save of its own, under a request id of this prefix."""
DEFAULT_GRACE_SECONDS: Final = 30
"""Kubernetes' default ``terminationGracePeriodSeconds``."""
MAX_ENTRIES: Final = 16
_MAX_REQUEST_ID: Final = 128
_MAX_REASON: Final = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signal:
    """One announcement that pods of a job are about to end."""

    key: str
    """Deterministic: the same announcement always has the same key."""
    reason: SignalReason
    subject: str
    """The object that announced it, e.g. ``node/worker-3`` or ``pod/train-0``."""
    message: str

    @property
    def request_id(self) -> str:
        """The ``spec.saveNow.requestId`` a save asked for by this signal gets."""
        cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", self.key)
        return (REQUEST_PREFIX + cleaned)[:_MAX_REQUEST_ID]


# --- the ledger ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One signal the operator acted on."""

    key: str
    reason: SignalReason
    subject: str
    message: str
    at: str
    """When the operator saw it (RFC 3339)."""
    request_id: str
    """The save request it asked for, or joined."""
    previous_answer: str | None = None
    """``status.lastSaveRequest.requestId`` when it was announced (older answers are not its)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ledger:
    """The annotation's content: the pods' grace period and the recent signals, oldest first."""

    grace_seconds: int | None = None
    entries: tuple[Entry, ...] = ()

    def announced(self, key: str) -> bool:
        """Whether a signal of ``key`` was acted on."""
        return any(e.key == key for e in self.entries)


_ENTRY_WIRE = {
    "key": "key",
    "reason": "reason",
    "subject": "subject",
    "message": "message",
    "at": "at",
    "request_id": "requestId",
    "previous_answer": "previousAnswer",
}


def load_ledger(text: str | None) -> Ledger:
    """The ledger from the annotation; an empty one when absent or unreadable."""
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return Ledger()
    if not isinstance(raw, Mapping):
        return Ledger()
    grace = raw.get("graceSeconds")
    entries = [e for e in map(_entry, raw.get("signals") or ()) if e is not None]
    return Ledger(grace_seconds=grace if isinstance(grace, int) else None, entries=tuple(entries))


def _entry(item: object) -> Entry | None:
    if not isinstance(item, Mapping) or item.get("reason") not in SIGNAL_REASONS:
        return None
    values = {name: item.get(wire) for name, wire in _ENTRY_WIRE.items()}
    if not all(isinstance(values[k], str) for k in ("key", "at", "request_id")):
        return None
    return Entry(**{k: v if v is None else str(v) for k, v in values.items()})  # type: ignore[arg-type]


def dump_ledger(ledger: Ledger) -> str:
    """The annotation's text."""
    signals = [
        {wire: getattr(e, name) for name, wire in _ENTRY_WIRE.items() if getattr(e, name)}
        for e in ledger.entries
    ]
    return json.dumps({"graceSeconds": ledger.grace_seconds, "signals": signals}, sort_keys=True)


# --- acting on a signal ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Announcement:
    """What to write for one new signal."""

    ledger: Ledger
    save_now: dict[str, str] | None
    """The ``spec.saveNow`` to publish; None when the signal joins an unanswered request."""
    new_preemption: bool
    """The first signal of a preemption (count it, post an Event), not one joining it."""
    entry: Entry


def _answer_id(status: Mapping[str, Any]) -> str | None:
    answer = status.get(contract.LAST_SAVE_REQUEST)
    request = answer.get("requestId") if isinstance(answer, Mapping) else None
    return request if isinstance(request, str) else None


def unanswered_request(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """The ``spec.saveNow`` request the job has not answered yet, if any."""
    if save_request.answered(spec, status):
        return None
    return save_request.requested(spec)


def announce(
    ledger: Ledger,
    signal: Signal,
    *,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    now: dt.datetime,
) -> Announcement | None:
    """The writes for ``signal`` on a Checkpoint of ``spec`` and ``status``; None when it was
    acted on already (a repeated event, an operator restart)."""
    if ledger.announced(signal.key):
        return None
    pending = unanswered_request(spec, status)
    request_id = pending or signal.request_id
    entry = Entry(
        key=signal.key,
        reason=signal.reason,
        subject=signal.subject,
        message=signal.message,
        at=format_time(now),
        request_id=request_id,
        previous_answer=_answer_id(status),
    )
    save_now = None
    if pending is None:
        save_now = {
            "requestId": request_id,
            "reason": f"{signal.reason}: {signal.message}"[:_MAX_REASON],
            "requestedAt": format_time(now),
        }
    entries = (*ledger.entries, entry)[-MAX_ENTRIES:]
    return Announcement(
        ledger=dataclasses.replace(ledger, entries=entries),
        save_now=save_now,
        new_preemption=all(e.request_id != request_id for e in ledger.entries),
        entry=entry,
    )


# --- status.lastPreemption -------------------------------------------------------------------


def _answers(answer: Mapping[str, Any], request_id: str, first: Entry) -> bool:
    """Whether the job's answer is the one to this preemption: to its request, or a SIGTERM save
    made after it was announced (the pod was signalled before it reached a step boundary)."""
    answered = answer.get("requestId")
    if answered == request_id:
        return True
    return (
        isinstance(answered, str)
        and answered.startswith(SIGTERM_PREFIX)
        and answered != first.previous_answer
    )


def last_preemption(ledger: Ledger, status: Mapping[str, Any]) -> dict[str, Any] | None:
    """``status.lastPreemption``: the newest preemption and the job's answer; None if none."""
    if not ledger.entries:
        return None
    request_id = ledger.entries[-1].request_id
    group = [e for e in ledger.entries if e.request_id == request_id]
    first = group[0]
    grace = ledger.grace_seconds if ledger.grace_seconds is not None else DEFAULT_GRACE_SECONDS
    announced = parse_time(first.at)
    value: dict[str, Any] = {
        "reason": first.reason,
        "message": first.message,
        "announcedAt": first.at,
        "requestId": request_id,
        "signals": [f"{e.reason} {e.subject}" for e in group],
        "outcome": "Pending",
    }
    if announced is not None:
        value["deadline"] = format_time(announced + dt.timedelta(seconds=grace))
    answer = status.get(contract.LAST_SAVE_REQUEST)
    if isinstance(answer, Mapping) and _answers(answer, request_id, first):
        value.update(_answer_fields(answer))
    return value


def _answer_fields(answer: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"answeredBy": answer.get("requestId")}
    outcome = answer.get("outcome")
    if outcome in ("Committed", "Failed"):
        fields["outcome"] = outcome
    for key in ("iteration", "saveSeconds", "committedAt"):
        if answer.get(key) is not None:
            fields[key] = answer[key]
    if outcome == "Failed" and answer.get("message"):
        fields["message"] = str(answer["message"])
    return fields
