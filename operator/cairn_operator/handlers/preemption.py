"""Save before preemption: watch what announces the end of a job's pods and ask it for a save.

Watched: the job's pods (``cairn.dev/checkpoint`` label: deletion, eviction), the nodes under
them (cordon, ``NoExecute`` taint), Kueue ``Workload``s and ``JobSet``s of the job (Evicted or
Preempted; suspended). A signal is written to the Checkpoint in one patch, guarded by its
``resourceVersion``: the ledger annotation and, unless it joins a request the job has not
answered yet, ``spec.saveNow`` (``reconcile.preemption``). Each new preemption posts an Event
and counts in ``cairn_preemptions_total``.

On the Checkpoint's own events, ``reconcile`` derives ``status.lastPreemption`` (with the job's
answer) and the ``PreemptionSafe`` condition (``reconcile.preemption_safe``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator import k8s
from cairn_operator.handlers.common import (
    Obj,
    OperatorContext,
    annotation,
    generation_of,
    post_event,
    ref,
    set_condition,
    set_status,
    status_of,
    timed,
)
from cairn_operator.reconcile import conditions, preemption, preemption_safe, preemption_signals
from cairn_operator.reconcile.node_index import PodRef

log = logging.getLogger(__name__)

_ATTEMPTS = 5
KUEUE_WORKLOADS = ("kueue.x-k8s.io", "v1beta1", "workloads")
JOBSETS = ("jobset.x-k8s.io", "v1alpha2", "jobsets")


# --- the Checkpoint's group: status.lastPreemption and PreemptionSafe -------------------------


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Publish ``status.lastPreemption`` and set ``PreemptionSafe``."""
    ledger = preemption.load_ledger(annotation(obj, preemption.LEDGER_ANNOTATION))
    _preemption_safe(obj, patch, ctx, ledger)
    _last_preemption(obj, patch, ledger)


def _preemption_safe(obj: Obj, patch: kopf.Patch, ctx: OperatorContext, ledger: Any) -> None:
    grace, source = ledger.grace_seconds, "the job's pods"
    if grace is None:
        grace, source = preemption.DEFAULT_GRACE_SECONDS, "the default; no pod of the job seen"
    verdict = preemption_safe.judge(status_of(obj), grace, grace_source=source)
    cond = conditions.make_condition(
        contract.COND_PREEMPTION_SAFE,
        verdict.status == "True",
        verdict.reason,
        verdict.message,
        now=ctx.clock(),
        generation=generation_of(obj),
    )
    cond["status"] = verdict.status
    if set_condition(obj, patch, cond):
        log.info("%s: PreemptionSafe=%s (%s)", ref(obj), verdict.status, verdict.message)


def _last_preemption(obj: Obj, patch: kopf.Patch, ledger: preemption.Ledger) -> None:
    value = preemption.last_preemption(ledger, status_of(obj))
    if value is None:
        return
    old = status_of(obj).get(contract.LAST_PREEMPTION) or {}
    if not set_status(obj, patch, contract.LAST_PREEMPTION, value):
        return
    settled = value["outcome"] != "Pending"
    if settled and (old.get("requestId"), old.get("outcome")) != (
        value["requestId"],
        value["outcome"],
    ):
        _post_answer(obj, value)


def _post_answer(obj: Obj, value: dict[str, Any]) -> None:
    if value["outcome"] == "Committed":
        message = (
            f"saved iteration {value.get('iteration')} in {value.get('saveSeconds')}s before the "
            f"preemption ({value['reason']}: {value['message']})"
        )
        post_event(obj, "Normal", "PreemptionSaved", message)
    else:
        message = f"the save asked for by the preemption failed: {value.get('message')}"
        post_event(obj, "Warning", "PreemptionSaveFailed", message)
    log.info("%s: %s", ref(obj), message)


# --- signals: write them to the Checkpoint -----------------------------------------------------


async def _announce(
    namespace: str, name: str, signal: preemption.Signal, ctx: OperatorContext, logger: Any
) -> None:
    # Event handlers are not retried by kopf: retry conflicts with other writers here.
    for attempt in range(_ATTEMPTS):
        try:
            await _announce_once(namespace, name, signal, ctx, logger)
            return
        except k8s.Conflict:
            log.debug("%s/%s: preemption write conflict (attempt %d)", namespace, name, attempt + 1)
    log.warning(
        "%s/%s: gave up announcing %s after %d conflicts", namespace, name, signal.key, _ATTEMPTS
    )


async def _announce_once(
    namespace: str, name: str, signal: preemption.Signal, ctx: OperatorContext, logger: Any
) -> None:
    url = k8s.checkpoint_url(namespace, name)
    async with ctx.lock(namespace, name):
        ckpt = await k8s.get(url, settings=ctx.kopf_settings, logger=logger)
        if ckpt is None or (ckpt.get("metadata") or {}).get("deletionTimestamp"):
            return
        ledger = preemption.load_ledger(annotation(ckpt, preemption.LEDGER_ANNOTATION))
        decision = preemption.announce(
            ledger, signal, spec=ckpt.get("spec") or {}, status=status_of(ckpt), now=ctx.clock()
        )
        if decision is None:
            return
        body: dict[str, Any] = {"metadata": _ledger_metadata(ckpt, decision.ledger)}
        if decision.save_now is not None:
            body["spec"] = {"saveNow": decision.save_now}
        if await k8s.merge_patch(url, body, settings=ctx.kopf_settings, logger=logger) is None:
            return
    _tell(namespace, name, ckpt, decision, ctx)


def _ledger_metadata(ckpt: k8s.Body, ledger: preemption.Ledger) -> dict[str, Any]:
    return {
        "resourceVersion": (ckpt.get("metadata") or {}).get("resourceVersion"),
        "annotations": {preemption.LEDGER_ANNOTATION: preemption.dump_ledger(ledger)},
    }


def _tell(
    namespace: str,
    name: str,
    ckpt: k8s.Body,
    decision: preemption.Announcement,
    ctx: OperatorContext,
) -> None:
    entry = decision.entry
    if not decision.new_preemption:
        log.info(
            "%s/%s: %s joins save request %s", namespace, name, entry.message, entry.request_id
        )
        return
    ctx.metrics.preemptions.labels(namespace=namespace, name=name, reason=entry.reason).inc()
    asked = (
        "asked the job for a save" if decision.save_now else "the job was already asked for a save"
    )
    message = f"{entry.message}: {asked} (request {entry.request_id})"
    log.warning("%s/%s: preemption announced: %s", namespace, name, message)
    post_event(k8s.object_ref(ckpt), "Warning", "PreemptionAnnounced", message)


async def _record_grace(
    namespace: str, name: str, grace: int, ctx: OperatorContext, logger: Any
) -> None:
    """Keep the pods' grace period in the ledger (what ``PreemptionSafe`` measures against)."""
    if ctx.recorded_grace.get((namespace, name)) == grace:
        return
    url = k8s.checkpoint_url(namespace, name)
    for _ in range(_ATTEMPTS):
        async with ctx.lock(namespace, name):
            ckpt = await k8s.get(url, settings=ctx.kopf_settings, logger=logger)
            if ckpt is None:
                return
            ledger = preemption.load_ledger(annotation(ckpt, preemption.LEDGER_ANNOTATION))
            if ledger.grace_seconds != grace:
                new = preemption.Ledger(grace_seconds=grace, entries=ledger.entries)
                try:
                    await k8s.merge_patch(
                        url,
                        {"metadata": _ledger_metadata(ckpt, new)},
                        settings=ctx.kopf_settings,
                        logger=logger,
                    )
                except k8s.Conflict:
                    continue
            ctx.recorded_grace[(namespace, name)] = grace
            return


# --- watchers ----------------------------------------------------------------------------------


async def _pod_job_signal(
    pod: kopf.Body, signal: preemption.Signal, ctx: OperatorContext, logger: Any
) -> preemption.Signal:
    """A deleted pod of a suspended Job is the Job's suspension (same key: one announcement)."""
    owners = [o for o in pod.metadata.get("ownerReferences") or () if o.get("kind") == "Job"]
    if signal.reason != "PodDeleting" or not owners:
        return signal
    url = k8s.job_url(pod.metadata.namespace or "", owners[0].get("name"))
    job = await k8s.get(url, settings=ctx.kopf_settings, logger=logger)
    suspended = preemption_signals.suspended_signal(job or {}, "JobSuspended")
    if suspended is None:
        return signal
    return preemption.Signal(
        key=signal.key,
        reason="JobSuspended",
        subject=suspended.subject,
        message=f"{suspended.message} ({signal.subject} is being deleted)",
    )


async def _on_pod(body: kopf.Body, deleted: bool, ctx: OperatorContext, logger: Any) -> None:
    checkpoint = body.metadata.labels.get(contract.LABEL_CHECKPOINT)
    namespace, uid = body.metadata.namespace, str(body.metadata.uid or body.metadata.name)
    if deleted:
        ctx.nodes.pod_gone(uid)
        return
    if not checkpoint or not namespace:
        return
    pod = PodRef(
        uid=uid,
        name=str(body.metadata.name),
        namespace=namespace,
        checkpoint=checkpoint,
        node=body.spec.get("nodeName"),
    )
    node = ctx.nodes.pod_seen(pod)
    signal = preemption_signals.pod_signal(body)
    if signal is not None:
        signal = await _pod_job_signal(body, signal, ctx, logger)
    elif node is not None and pod.node is not None:
        signal = preemption_signals.node_signal(pod.node, node, uid, pod.name)
    else:
        grace = preemption_signals.grace_seconds_of(body)
        await _record_grace(namespace, checkpoint, grace, ctx, logger)
    if signal is not None:
        await _announce(namespace, checkpoint, signal, ctx, logger)


async def _on_node(body: kopf.Body, deleted: bool, ctx: OperatorContext, logger: Any) -> None:
    name = str(body.metadata.name)
    state = None if deleted else preemption_signals.node_state(body)
    for pod in ctx.nodes.node_seen(name, state):
        if state is not None:
            signal = preemption_signals.node_signal(name, state, pod.uid, pod.name)
            await _announce(pod.namespace, pod.checkpoint, signal, ctx, logger)


async def _on_owner(
    body: kopf.Body, signal: preemption.Signal | None, ctx: OperatorContext, logger: Any
) -> None:
    checkpoint = preemption_signals.checkpoint_of(body)
    namespace = body.metadata.namespace
    if signal is not None and checkpoint and namespace:
        await _announce(namespace, checkpoint, signal, ctx, logger)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Register the watchers of pods, nodes, Kueue Workloads and JobSets.

    Kueue and JobSet are optional: where their CRDs are not installed kopf serves nothing for
    them (and picks them up when the CRDs appear, in cluster-wide mode)."""

    @kopf.on.event(
        "",
        "v1",
        "pods",
        registry=registry,
        id="pods-preemption",
        labels={contract.LABEL_CHECKPOINT: kopf.PRESENT},
    )
    @timed(ctx, "pods-preemption")
    async def pod_event(body: kopf.Body, event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        await _on_pod(body, event.get("type") == "DELETED", ctx, logger)

    @kopf.on.event("", "v1", "nodes", registry=registry, id="nodes")
    @timed(ctx, "nodes")
    async def node_event(body: kopf.Body, event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        await _on_node(body, event.get("type") == "DELETED", ctx, logger)

    @kopf.on.event(*KUEUE_WORKLOADS, registry=registry, id="kueue-workloads")
    @timed(ctx, "kueue-workloads")
    async def workload_event(body: kopf.Body, event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        if event.get("type") != "DELETED":
            await _on_owner(body, preemption_signals.workload_signal(body), ctx, logger)

    @kopf.on.event(*JOBSETS, registry=registry, id="jobsets")
    @timed(ctx, "jobsets")
    async def jobset_event(body: kopf.Body, event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        if event.get("type") != "DELETED":
            signal = preemption_signals.suspended_signal(body, "JobSetSuspended")
            await _on_owner(body, signal, ctx, logger)
