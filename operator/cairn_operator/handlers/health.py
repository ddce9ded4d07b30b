"""Async-worker health: the ``Degraded`` condition (SaveStalled / AgentSilent / Healthy).

A silent agent produces no watch events, so one background scanner (started with the operator)
re-judges every known Checkpoint each ``health_interval_s``; it is the only writer of
``Degraded``, which posts each transition's Event once. It judges from the last body seen on the
watch, and writes only after re-reading the object and with its ``resourceVersion`` as a
precondition, so a concurrent write makes it retry on the next tick instead of clobbering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator import k8s
from cairn_operator.handlers.common import (
    LEDGER_ANNOTATION,
    Obj,
    OperatorContext,
    annotation,
    generation_of,
    is_live,
    key_of,
    post_event,
    status_of,
)
from cairn_operator.reconcile import conditions, restarts
from cairn_operator.reconcile.health import assess_health
from cairn_operator.reconcile.spec import read_spec

log = logging.getLogger(__name__)


def verdict(body: Mapping[str, Any], ctx: OperatorContext) -> conditions.Condition:
    """The ``Degraded`` condition ``body`` deserves now."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    ledger = restarts.load_ledger(annotations.get(LEDGER_ANNOTATION))
    health = assess_health(
        read_spec(body.get("spec") or {}),
        status_of(body),
        now=ctx.clock(),
        job_running=restarts.job_running(ledger),
    )
    return conditions.make_condition(
        contract.COND_DEGRADED,
        health.degraded,
        health.reason,
        health.message,
        now=ctx.clock(),
        generation=generation_of(body),
    )


def _current(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return conditions.find(status_of(body).get(contract.CONDITIONS), contract.COND_DEGRADED)


def _needs_change(body: Mapping[str, Any], ctx: OperatorContext) -> bool:
    return is_live(body, None) and not conditions.same(_current(body), verdict(body, ctx))


async def _transition(fresh: dict[str, Any], ctx: OperatorContext) -> None:
    cond = verdict(fresh, ctx)
    status = status_of(fresh)
    conds = conditions.upsert(status.get(contract.CONDITIONS), cond)
    merged = {**status, contract.CONDITIONS: conds}
    meta = fresh["metadata"]
    patch = {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "status": {
            contract.CONDITIONS: conds,
            contract.PHASE: conditions.derive_phase(
                merged, conds, bool(meta.get("deletionTimestamp"))
            ),
        },
    }
    url = k8s.checkpoint_url(meta["namespace"], meta["name"], status=True)
    was_degraded = conditions.is_true(status.get(contract.CONDITIONS), contract.COND_DEGRADED)
    if await k8s.merge_patch(url, patch, settings=ctx.kopf_settings, logger=log) is None:
        return
    log.info(
        "%s/%s: Degraded=%s %s", meta["namespace"], meta["name"], cond["status"], cond["message"]
    )
    if cond["status"] == "True":
        post_event(fresh, "Warning", cond["reason"], cond["message"])
    elif was_degraded:
        post_event(fresh, "Normal", "Recovered", cond["message"])


async def check_one(seen: Mapping[str, Any], ctx: OperatorContext) -> None:
    """Re-judge one Checkpoint; write only if the fresh object still needs the change."""
    if not _needs_change(seen, ctx):
        return
    meta = seen.get("metadata") or {}
    url = k8s.checkpoint_url(meta.get("namespace", ""), meta.get("name", ""))
    fresh = await k8s.get(url, settings=ctx.kopf_settings, logger=log)
    if fresh is not None and _needs_change(fresh, ctx):
        with contextlib.suppress(k8s.Conflict):  # someone wrote meanwhile: next tick decides
            await _transition(fresh, ctx)


async def scan_forever(ctx: OperatorContext) -> None:
    """Every ``health_interval_s``, re-judge every Checkpoint seen on the watch."""
    while True:
        await asyncio.sleep(ctx.settings.health_interval_s)
        with ctx.metrics.reconcile_seconds.labels(handler="health").time():
            for seen in list(ctx.seen.values()):
                try:
                    await check_one(seen, ctx)
                except Exception:  # one bad object or a failed request must not stop the scanner
                    log.exception(
                        "health check of %s failed", (seen.get("metadata") or {}).get("name")
                    )


_METADATA_JUDGED = ("namespace", "name", "generation", "deletionTimestamp")
_STATUS_JUDGED = (contract.SAVE_IN_PROGRESS, contract.ASYNC_WORKER)


def essentials(obj: Obj) -> dict[str, Any]:
    """The parts of a Checkpoint that ``verdict`` judges, and nothing else.

    What the scanner keeps per Checkpoint is what the operator's memory grows with; the saved
    iterations, retention plan and the rest of the status are not needed to judge health (the
    scanner re-reads the whole object before it writes).
    """
    meta = obj.get("metadata") or {}
    status = status_of(obj)
    kept_meta = {k: meta[k] for k in _METADATA_JUDGED if k in meta}
    ledger = annotation(obj, LEDGER_ANNOTATION)
    if ledger is not None:
        kept_meta["annotations"] = {LEDGER_ANNOTATION: ledger}
    kept_status = {k: status[k] for k in _STATUS_JUDGED if k in status}
    degraded = _current(obj)
    if degraded is not None:
        kept_status[contract.CONDITIONS] = [degraded]
    return {"metadata": kept_meta, "spec": obj.get("spec") or {}, "status": kept_status}


def remember(obj: Obj, deleted: bool, ctx: OperatorContext) -> None:
    """Keep what the scanner judges of each Checkpoint's last body; start it on first use.

    Started from a handler, not at startup: the task inherits the handler's context (kopf's
    Event poster and credentials), which startup activities do not carry.
    """
    if deleted:
        ctx.seen.pop(key_of(obj), None)
    else:
        ctx.seen[key_of(obj)] = essentials(obj)
    if ctx.scanner is None:
        ctx.scanner = asyncio.create_task(scan_forever(ctx), name="cairn-health-scanner")


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Register the scanner's stop."""

    @kopf.on.cleanup(registry=registry, id="health-scanner-stop")
    async def stop(**_: Any) -> None:
        if ctx.scanner is not None:
            ctx.scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx.scanner
