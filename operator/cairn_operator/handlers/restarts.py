"""Restart handlers: watch the job's pods, keep the ledger, publish ``status.restarts``.

Pod events update the ledger annotation on the Checkpoint (read fresh, written with the read's
``resourceVersion`` so a concurrent writer makes this one retry); the Checkpoint's own event
handler derives ``status.restarts`` from the ledger and the agent's ``lastResume``. One Event is
posted per newly observed restart.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator import k8s
from cairn_operator.handlers.common import (
    LEDGER_ANNOTATION,
    Obj,
    OperatorContext,
    annotation,
    post_event,
    set_status,
    status_of,
    timed,
)
from cairn_operator.reconcile import restarts

log = logging.getLogger(__name__)


_ATTEMPTS = 5


async def _record(
    namespace: str,
    name: str,
    obs: restarts.PodObservation,
    ctx: OperatorContext,
    logger: Any,
) -> None:
    # Event handlers are not retried by kopf: retry conflicts with other writers here.
    for attempt in range(_ATTEMPTS):
        try:
            await _record_once(namespace, name, obs, ctx, logger)
            return
        except k8s.Conflict:
            log.debug("%s/%s: ledger write conflict (attempt %d)", namespace, name, attempt + 1)
    log.warning(
        "%s/%s: gave up recording pod %s after %d conflicts", namespace, name, obs.name, _ATTEMPTS
    )


async def _record_once(
    namespace: str,
    name: str,
    obs: restarts.PodObservation,
    ctx: OperatorContext,
    logger: Any,
) -> None:
    url = k8s.checkpoint_url(namespace, name)
    async with ctx.lock(namespace, name):
        ckpt = await k8s.get(url, settings=ctx.kopf_settings, logger=logger)
        if ckpt is None:
            return
        meta = ckpt.get("metadata") or {}
        old = restarts.load_ledger((meta.get("annotations") or {}).get(LEDGER_ANNOTATION))
        new, messages = restarts.record(
            old, obs, now=ctx.clock(), max_pods=ctx.settings.max_observed_pods
        )
        if new == old:
            return
        patch = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {LEDGER_ANNOTATION: restarts.dump_ledger(new)},
            }
        }
        if await k8s.merge_patch(url, patch, settings=ctx.kopf_settings, logger=logger) is None:
            return
    for message in messages:
        log.info("%s/%s: restart observed: %s", namespace, name, message)
        post_event(k8s.object_ref(ckpt), "Warning", "PodRestarted", message)


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Publish ``status.restarts`` from the ledger and the agent's ``lastResume``."""
    ledger = restarts.load_ledger(annotation(obj, LEDGER_ANNOTATION))
    if ledger["pods"] or ledger["base"]:
        summary = restarts.restarts_status(ledger, status_of(obj).get(contract.LAST_RESUME))
        set_status(obj, patch, contract.RESTARTS, summary)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Register the pod watcher."""

    @kopf.on.event(
        "",
        "v1",
        "pods",
        registry=registry,
        id="pods",
        labels={contract.LABEL_CHECKPOINT: kopf.PRESENT},
    )
    @timed(ctx, "pods")
    async def pod_event(body: kopf.Body, event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        name = body.metadata.labels.get(contract.LABEL_CHECKPOINT)
        namespace = body.metadata.namespace
        if not name or not namespace:
            return
        obs = restarts.observe_pod(body, deleted=event.get("type") == "DELETED")
        await _record(namespace, name, obs, ctx, logger)
