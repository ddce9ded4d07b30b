"""Retention: ``status.retention`` always; a ``cairn gc`` Job when the job is not running.

The plan comes from the status planner (``cairn_agent.resource.retention``) over what the
agent reported; the Job re-plans on disk with the same policy and protections. Its name is a digest
of its command and plan, so the same plan never starts a second Job, even across restarts.
"""

from __future__ import annotations

import logging

import kopf
from cairn_agent.resource import contract
from cairn_agent.resource.retention import StatusPlan
from cairn_agent.resource.times import format_time

from cairn_operator import k8s
from cairn_operator.handlers.common import (
    LEDGER_ANNOTATION,
    Obj,
    OperatorContext,
    annotation,
    key_of,
    pending_status,
    post_event,
    ref,
    set_status,
    status_of,
)
from cairn_operator.reconcile import gc_job, restarts
from cairn_operator.reconcile.retention_plan import job_active, plan_for, retention_summary
from cairn_operator.reconcile.spec import SpecView, read_spec

log = logging.getLogger(__name__)
PURPOSE = "retention"


async def _ensure_gc_job(obj: Obj, spec: SpecView, view: StatusPlan, ctx: OperatorContext) -> str:
    """Create (or find) the retention Job; return when it was created (``lastRun``)."""
    key = key_of(obj)
    command = gc_job.retention_command(spec.path, spec.retention, view, deep=spec.verify_deep)
    job_name = gc_job.job_name(key[1], PURPOSE, [*command, *map(str, view.plan.delete)])
    known_name, known_run = ctx.known_jobs.get(key, ("", ""))
    if known_name == job_name:
        return known_run
    # The manifest is built inside the bound too: a reconcile waiting for its turn holds none.
    async with ctx.job_creations:
        last_run = await _create_gc_job(obj, spec, view, command, job_name, ctx)
    ctx.known_jobs[key] = (job_name, last_run)
    return last_run


async def _create_gc_job(
    obj: Obj,
    spec: SpecView,
    view: StatusPlan,
    command: list[str],
    job_name: str,
    ctx: OperatorContext,
) -> str:
    namespace, name = key_of(obj)
    job = gc_job.build_gc_job(
        name=job_name,
        namespace=namespace,
        checkpoint=name,
        owner_uid=(obj.get("metadata") or {}).get("uid"),
        purpose=PURPOSE,
        claim_name=spec.claim_name,
        mount_path=spec.mount_path,
        command=command,
        image=ctx.settings.gc_image,
        service_account=ctx.settings.gc_service_account,
        backoff_limit=ctx.settings.gc_backoff_limit,
    )
    found, created = await k8s.create_if_absent(
        k8s.job_url(namespace), job, settings=ctx.kopf_settings, logger=log
    )
    if created:
        message = f"Job {job_name} deletes iterations {list(view.plan.delete)}: {' '.join(command)}"
        log.info("%s: retention: %s", ref(obj), message)
        post_event(obj, "Normal", "RetentionJobCreated", message)
    stamp = (found.get("metadata") or {}).get("creationTimestamp")
    return str(stamp) if stamp else format_time(ctx.clock())


def forget(key: tuple[str, str], ctx: OperatorContext) -> None:
    """Drop what is cached of a deleted Checkpoint's Jobs."""
    ctx.known_jobs.pop(key, None)


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Publish the plan; run it in a Job when the training job is not running."""
    spec = read_spec(obj.get("spec") or {})
    status = status_of(obj)
    resume = pending_status(obj, patch, contract.RESUME_FROM) or {}
    view = plan_for(spec, status, resume_iteration=resume.get("iteration"))
    last_run = (status.get(contract.RETENTION) or {}).get("lastRun")
    ledger = restarts.load_ledger(annotation(obj, LEDGER_ANNOTATION))
    active = job_active(spec, status, now=ctx.clock(), pods_running=restarts.job_running(ledger))
    if view.plan.delete and not spec.retention.dry_run and not active:
        last_run = await _ensure_gc_job(obj, spec, view, ctx)
    summary = retention_summary(
        view, spec, max_listed=ctx.settings.max_planned_deletions, last_run=last_run
    )
    set_status(obj, patch, contract.RETENTION, summary)
