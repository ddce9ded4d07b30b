"""What every handler group shares: the run context and helpers for level-triggered patches.

Handlers of one watch event share kopf's ``patch``; they write only operator status keys, and only
when the value differs from the object's, so that the patch a handler makes comes back as an event
that changes nothing and the loop settles. Conditions are upserted into the pending patch, not the
stale body, because several handlers set different conditions in the same event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

import kopf
from cairn_agent.resource import contract

from cairn_operator.metrics import Metrics
from cairn_operator.reconcile import conditions
from cairn_operator.reconcile.echo import Watermarks
from cairn_operator.reconcile.node_index import NodeIndex
from cairn_operator.settings import OperatorSettings

P = ParamSpec("P")
R = TypeVar("R")
CHECKPOINT = (contract.GROUP, contract.VERSION, contract.PLURAL)
LEDGER_ANNOTATION = f"{contract.GROUP}/observed-pods"
JOB_CREATIONS_IN_FLIGHT = 8
"""GC Job creations in flight at once. When thousands of Checkpoints need a Job together (the
watch delivering a backlog at once, an operator restart), unbounded creation queued ~2,000
requests in the API connection pool, each holding its request and its reconcile; measured at
2,000 Checkpoints (bench/operator_scale.py), bounding it to 8 lowered the operator's peak
memory from 70-75 to 56-60 KiB per Checkpoint with no slower convergence. Eight creations of
~5-10 ms each still start hundreds of Jobs per second."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(kw_only=True)
class OperatorContext:
    """One operator run: settings, metrics, the clock, and per-Checkpoint write locks."""

    settings: OperatorSettings
    """Cairn's tunables."""
    metrics: Metrics
    """Prometheus metrics of this run."""
    kopf_settings: kopf.OperatorSettings = dataclasses.field(default_factory=kopf.OperatorSettings)
    """kopf's settings of this run (the handlers' own API calls use its timeouts)."""
    clock: Callable[[], dt.datetime] = _utcnow
    """Current time (UTC); injectable for tests."""
    seen: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    """What the health scanner judges of the last body of each Checkpoint seen on the watch
    (``health.essentials``)."""
    known_jobs: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)
    """Per Checkpoint, its newest retention Job known to exist: (name, creation time). A cache
    that saves a 409 per event; one entry per Checkpoint (a new plan's Job replaces the old
    one's, a deleted Checkpoint's goes), and a restarted operator starts empty and finds the
    Jobs again by their deterministic names."""
    job_creations: asyncio.Semaphore = dataclasses.field(
        default_factory=lambda: asyncio.Semaphore(JOB_CREATIONS_IN_FLIGHT)
    )
    """Held while a GC Job is built and created (``JOB_CREATIONS_IN_FLIGHT`` at a time)."""
    scanner: asyncio.Task[None] | None = None
    """The health scanner task, once started."""
    locks: dict[tuple[str, str], asyncio.Lock] = dataclasses.field(default_factory=dict)
    """Serialise read-modify-write of one Checkpoint's ledger across concurrent pod events."""
    nodes: NodeIndex = dataclasses.field(default_factory=NodeIndex)
    """Training pods by node and the nodes that announce an end (cordon, NoExecute taint)."""
    watermarks: Watermarks = dataclasses.field(default_factory=Watermarks)
    """Per Checkpoint, the newest resourceVersion that needs no reconcile (``reconcile.echo``)."""
    recorded_grace: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    """The pods' grace period last written to each Checkpoint's preemption ledger (a cache that
    saves a read per pod event; a restarted operator reads it again)."""

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The write lock of one Checkpoint (created on first use)."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, key: tuple[str, str]) -> None:
        """Drop what is kept per Checkpoint of one that was deleted.

        A Checkpoint created again under the same name must not inherit the old one's
        ``recorded_grace`` (its ledger starts empty and needs the grace period written again).
        A lock still held stays, so its holder finishes under it; the next deletion of that
        name, or the operator's exit, drops it.
        """
        self.recorded_grace.pop(key, None)
        lock = self.locks.get(key)
        if lock is not None and not lock.locked():
            del self.locks[key]


def timed(
    ctx: OperatorContext, name: str
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Record a handler's duration in the reconcile histogram."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                ctx.metrics.reconcile_seconds.labels(handler=name).observe(
                    time.perf_counter() - start
                )

        return wrapper

    return decorate


Obj = Mapping[str, Any]
"""A Checkpoint as the raw dict from the watch event (faster to read than ``kopf.Body``)."""


def ref(obj: Obj) -> str:
    """``namespace/name`` for logs."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def key_of(obj: Obj) -> tuple[str, str]:
    """(namespace, name)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def annotation(obj: Obj, name: str) -> str | None:
    """One annotation's value."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(name)
    return value if isinstance(value, str) else None


def post_event(obj: Obj, kind: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event about ``obj`` (through kopf's poster; never raises)."""
    kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=kind, reason=reason, message=message)


def status_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's status (empty when absent)."""
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def generation_of(body: Mapping[str, Any]) -> int | None:
    """``metadata.generation`` if the server maintains it."""
    gen = (body.get("metadata") or {}).get("generation")
    return gen if isinstance(gen, int) else None


def is_live(body: Mapping[str, Any], event_type: str | None) -> bool:
    """False for deleted objects and those being deleted (only cleanup acts on them)."""
    return event_type != "DELETED" and not (body.get("metadata") or {}).get("deletionTimestamp")


def pending_status(body: Mapping[str, Any], patch: Mapping[str, Any], key: str) -> Any:
    """A status key as it will be after this event: the patch's value if set, else the body's."""
    pending = patch.get("status") or {}
    return pending[key] if key in pending else status_of(body).get(key)


def set_status(body: Mapping[str, Any], patch: Any, key: str, value: Any) -> bool:
    """Put ``status.<key> = value`` into the patch when it differs; True if it did."""
    if pending_status(body, patch, key) == value:
        return False
    patch.setdefault("status", {})[key] = value
    return True


def set_condition(body: Mapping[str, Any], patch: Any, cond: conditions.Condition) -> bool:
    """Upsert one condition into the pending conditions; True when it changed."""
    current = pending_status(body, patch, contract.CONDITIONS) or []
    old = conditions.find(current, cond["type"])
    if conditions.same(old, cond):
        return False
    return set_status(body, patch, contract.CONDITIONS, conditions.upsert(current, cond))
