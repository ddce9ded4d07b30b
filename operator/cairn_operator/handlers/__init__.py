"""kopf handlers of the Cairn operator, one module per handler group.

Every Checkpoint watch event runs the groups in a fixed order through one kopf handler (one kopf
invocation per event, not one per group): validation, policy applied, resume point, restarts summary,
adaptive save interval, retention, preemption (``lastPreemption``, ``PreemptionSafe``),
finalizer/clean-up, health bookkeeping, and the summary (phase, metrics) last.
Groups write only operator status keys into kopf's shared ``patch``; later groups read what
earlier ones put there (conditions, ``resumeFrom``). Pods, clean-up Jobs and what announces a
preemption (nodes, Kueue Workloads, JobSets) have their own watchers. ``build_registry``
registers all of it into a fresh ``kopf.OperatorRegistry``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

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
from cairn_operator.handlers.common import CHECKPOINT, Obj, OperatorContext, is_live
from cairn_operator.settings import configure_kopf

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
    if event_type == "DELETED":
        health.remember(obj, True, ctx)
        summary.forget(obj, ctx)
        return
    start = time.perf_counter()
    if is_live(obj, event_type):
        for name, group in _LIVE_GROUPS:
            await _run(name, group, obj, patch, ctx)
    await _run("cleanup", cleanup.reconcile, obj, patch, ctx)
    health.remember(obj, False, ctx)
    await _run("summary", summary.reconcile, obj, patch, ctx)
    ctx.metrics.reconcile_seconds.labels(handler="checkpoint").observe(time.perf_counter() - start)


def build_registry(ctx: OperatorContext, *, server: str | None = None) -> kopf.OperatorRegistry:
    """All handlers; ``server`` logs in to that URL without credentials (emulators, tests)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's own login helpers, without the optional client libraries kopf would prefer.
        if server is not None:
            return kopf.ConnectionInfo(server=server, insecure=True)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

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
