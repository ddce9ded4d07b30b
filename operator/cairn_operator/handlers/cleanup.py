"""Clean-up on deletion (finalizer ``cairn.dev/cleanup``): ``deletionPolicy`` Retain or Delete.

The finalizer is added to every live Checkpoint. When one is deleted, Retain releases it at once
and leaves the data; Delete runs ``cairn gc <root> --delete-all`` in a Job and releases the
finalizer only once that Job succeeded. The Job's name is a digest of its command and the
object's uid, so a restarted operator finds the same Job; the Job's own watch events (not a
timer, which kopf would stop on deletion) bring the release.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from cairn_agent.resource import contract
from cairn_agent.storage.retention.arguments import delete_all_arguments

from cairn_operator import k8s
from cairn_operator.handlers.common import Obj, OperatorContext, key_of, post_event, ref, timed
from cairn_operator.reconcile import gc_job
from cairn_operator.reconcile.spec import read_spec

log = logging.getLogger(__name__)
PURPOSE = "delete"
# Finished clean-up Jobs outlive their Checkpoint for an hour, for `kubectl logs`.
CLEANUP_JOB_TTL_S = 3600


def _cleanup_job(body: Mapping[str, Any], ctx: OperatorContext) -> dict[str, Any]:
    spec = read_spec(body.get("spec") or {})
    meta = body.get("metadata") or {}
    command = delete_all_arguments(spec.path)
    return gc_job.build_gc_job(
        name=gc_job.job_name(meta["name"], PURPOSE, [*command, meta.get("uid", "")]),
        namespace=meta["namespace"],
        checkpoint=meta["name"],
        owner_uid=None,
        purpose=PURPOSE,
        claim_name=spec.claim_name,
        mount_path=spec.mount_path,
        command=command,
        image=ctx.settings.gc_image,
        service_account=ctx.settings.gc_service_account,
        backoff_limit=ctx.settings.gc_backoff_limit,
        ttl_seconds=CLEANUP_JOB_TTL_S,
    )


def _finalizers(body: Mapping[str, Any]) -> list[str]:
    return list((body.get("metadata") or {}).get("finalizers") or [])


_ATTEMPTS = 5


async def _edit_finalizers(obj: Obj, ctx: OperatorContext, *, add: bool) -> Obj | None:
    """Add or remove Cairn's finalizer; the server's object after the write, or None when
    nothing was written (already so, gone, or still conflicting). Re-reads the object when it
    changed since ``obj`` (a busy agent makes any copy stale often enough that waiting for the
    next event could starve, and a deleted object may see no further event at all)."""
    current: Obj | None = obj
    namespace, name = key_of(obj)
    for _ in range(_ATTEMPTS):
        if current is None:
            return None
        present = _finalizers(current)
        if (contract.FINALIZER in present) == add:
            return None
        if add and (current.get("metadata") or {}).get("deletionTimestamp"):
            return None  # the API server refuses new finalizers on a deleted object
        wanted = (
            [*present, contract.FINALIZER]
            if add
            else [f for f in present if f != contract.FINALIZER]
        )
        answer = await k8s.set_finalizers(current, wanted, settings=ctx.kopf_settings, logger=log)
        if answer is not None:
            return answer
        current = await k8s.get(
            k8s.checkpoint_url(namespace, name), settings=ctx.kopf_settings, logger=log
        )
    return None


async def ensure_finalizer(obj: Obj, ctx: OperatorContext) -> Obj | None:
    """Add Cairn's finalizer to a live Checkpoint that lacks it; the server's object after the
    write, or None when nothing was written."""
    return await _edit_finalizers(obj, ctx, add=True)


async def _release(obj: Obj, ctx: OperatorContext, why: str) -> None:
    if await _edit_finalizers(obj, ctx, add=False) is not None:
        log.info("%s: finalizer released (%s)", ref(obj), why)


async def _finish_deletion(obj: Obj, ctx: OperatorContext) -> None:
    if read_spec(obj.get("spec") or {}).deletion_policy != "Delete":
        await _release(obj, ctx, "deletionPolicy Retain: the checkpoint data stays")
        return
    async with ctx.job_creations:
        job = _cleanup_job(obj, ctx)
        url = k8s.job_url(key_of(obj)[0])
        found, created = await k8s.create_if_absent(
            url, job, settings=ctx.kopf_settings, logger=log
        )
    name = job["metadata"]["name"]
    if created:
        log.info("%s: deletionPolicy Delete: started Job %s", ref(obj), name)
        post_event(obj, "Normal", "CleanupJobCreated", f"Job {name} deletes all checkpoint data")
    if gc_job.job_state(found) == "Succeeded":
        await _release(obj, ctx, f"clean-up Job {name} succeeded")


async def _on_cleanup_job(job: kopf.Body, ctx: OperatorContext) -> None:
    state = gc_job.job_state(job)
    if state == "Running":
        return
    url = k8s.checkpoint_url(job.meta.namespace or "", job.meta.labels.get(gc_job.LABEL_GC_FOR, ""))
    ckpt = await k8s.get(url, settings=ctx.kopf_settings, logger=log)
    if ckpt is None or contract.FINALIZER not in _finalizers(ckpt):
        return
    if state == "Failed":
        post_event(
            ckpt,
            "Warning",
            "CleanupFailed",
            f"Job {job.meta.name} failed; fix it and delete the Job to retry",
        )
    elif (ckpt.get("metadata") or {}).get("deletionTimestamp"):
        await _release(ckpt, ctx, f"clean-up Job {job.meta.name} succeeded")


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Finish the deletion of a deleted Checkpoint (a live one gets the finalizer after the
    cycle's status write: ``ensure_finalizer``)."""
    deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    if deleting and contract.FINALIZER in _finalizers(obj):
        await _finish_deletion(obj, ctx)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Register the clean-up Job watcher."""

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        registry=registry,
        id="cleanup-jobs",
        labels={gc_job.LABEL_PURPOSE: PURPOSE},
    )
    @timed(ctx, "cleanup-jobs")
    async def cleanup_job(body: kopf.Body, event: kopf.RawEvent, **_: Any) -> None:
        if event.get("type") != "DELETED":
            await _on_cleanup_job(body, ctx)
