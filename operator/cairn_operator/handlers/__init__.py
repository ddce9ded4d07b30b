"""kopf handlers of the Cairn operator, one module per handler group.

Every Checkpoint watch event runs the groups in a fixed order through one kopf handler (one kopf
invocation per event, not one per group): validation, policy applied, resume point, restarts summary,
adaptive save interval, retention, preemption (``lastPreemption``, ``PreemptionSafe``),
finalizer/clean-up, health bookkeeping, and the summary (phase, metrics) last. The groups' status
keys are written in one merge patch at the end of the cycle; an event no newer than a state
already reconciled or written (the echo of that patch, or one queued behind it) is skipped
(``reconcile.echo``).
Groups write only operator status keys into kopf's shared ``patch``; later groups read what
earlier ones put there (conditions, ``resumeFrom``). The cycle writes that patch itself rather
than leaving it to kopf, because the server's answer (its resourceVersion) is what tells the
echo apart. Pods, clean-up Jobs and what announces a
preemption (nodes, Kueue Workloads, JobSets) have their own watchers. ``build_registry``
registers all of it into a fresh ``kopf.OperatorRegistry``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator import k8s
from cairn_operator.connection import bounded_session
from cairn_operator.handlers import (
    cleanup,
    health,
    interval,
    policy,
    preemption,
    restarts,
    resume,
    retention,
    summary,
    validation,
)
from cairn_operator.handlers.common import CHECKPOINT, Obj, OperatorContext, is_live, key_of
from cairn_operator.reconcile import echo
from cairn_operator.settings import configure_kopf

log = logging.getLogger(__name__)
Group = Callable[[Obj, kopf.Patch, OperatorContext], Awaitable[None]]
_LIVE_GROUPS: tuple[tuple[str, Group], ...] = (
    ("validation", validation.reconcile),
    ("policy", policy.reconcile),
    ("resume", resume.reconcile),
    ("restarts", restarts.reconcile),
    ("interval", interval.reconcile),
    ("retention", retention.reconcile),
    ("preemption", preemption.reconcile),
)


async def _run(name: str, group: Group, obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    start = time.perf_counter()
    try:
        await group(obj, patch, ctx)
    finally:
        ctx.metrics.reconcile_seconds.labels(handler=name).observe(time.perf_counter() - start)


async def reconcile_checkpoint(
    obj: Obj, event_type: str | None, patch: kopf.Patch, ctx: OperatorContext
) -> None:
    """One pass over every group for one watch event of one Checkpoint."""
    key = key_of(obj)
    if event_type == "DELETED":
        ctx.watermarks.forget(key)
        ctx.forget(key)
        retention.forget(key, ctx)
        health.remember(obj, True, ctx)
        summary.forget(obj, ctx)
        return
    if ctx.watermarks.covers(key, obj):
        ctx.metrics.events_skipped.inc()
        return
    start = time.perf_counter()
    live = is_live(obj, event_type)
    if live:
        for name, group in _LIVE_GROUPS:
            await _run(name, group, obj, patch, ctx)
    await _run("cleanup", cleanup.reconcile, obj, patch, ctx)
    await _run("summary", summary.reconcile, obj, patch, ctx)
    written = await _write(key, obj, patch, live, ctx)
    health.remember(written or obj, False, ctx)
    ctx.metrics.reconcile_seconds.labels(handler="checkpoint").observe(time.perf_counter() - start)


async def _write(
    key: tuple[str, str], obj: Obj, patch: kopf.Patch, live: bool, ctx: OperatorContext
) -> Obj | None:
    """Write the groups' status keys (taken out of kopf's patch), then Cairn's finalizer on a
    live Checkpoint that lacks it, and move the watermark; return the server's object after
    the last write (None when nothing was written).

    The finalizer goes last because its write is guarded by a resourceVersion: taken from the
    status write's answer, it is fresh, where the event's may be seconds old on a busy object.
    """
    status = patch.pop("status", None)
    written = {"status": status} if status else {}
    answer: Obj | None = None
    if written:
        answer = await k8s.merge_patch(
            k8s.checkpoint_url(*key, status=True), written, settings=ctx.kopf_settings, logger=log
        )
    if live:
        answer = await cleanup.ensure_finalizer(answer or obj, ctx) or answer
    if answer is None:
        ctx.watermarks.reconciled(key, obj)
        return None
    expected = echo.predicted(obj, written, finalizer=contract.FINALIZER if live else None)
    ctx.watermarks.wrote(key, obj, expected, answer)
    return answer


def build_registry(ctx: OperatorContext, *, server: str | None = None) -> kopf.OperatorRegistry:
    """All handlers; ``server`` logs in to that URL without credentials (emulators, tests)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # kopf's own login helpers, without the optional client libraries kopf would prefer;
        # async, so that the session is created on the operator's event loop.
        if server is not None:
            info: kopf.ConnectionInfo | None = kopf.ConnectionInfo(server=server, insecure=True)
        else:
            info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is None:
            return None
        return bounded_session(info, ctx.settings.api_connections)

    @kopf.on.event(*CHECKPOINT, registry=registry, id="checkpoint")
    async def checkpoint_event(event: kopf.RawEvent, patch: kopf.Patch, **_: Any) -> None:
        obj = event.get("object") or {}
        await reconcile_checkpoint(obj, event.get("type"), patch, ctx)

    for group in (restarts, preemption, cleanup, health):
        group.register(registry, ctx)
    return registry


def build_kopf_settings(ctx: OperatorContext) -> kopf.OperatorSettings:
    """kopf's settings with Cairn's annotation storage and event posting."""
    configure_kopf(ctx.kopf_settings, ctx.settings)
    return ctx.kopf_settings
