"""The operator's view of retention: the status planner shared with ``kubectl cairn``.

``plan_for`` is ``cairn_agent.resource.retention.plan_from_status`` (the one planner over a
Checkpoint's status, on the same pure core as the agent and ``cairn gc``) applied to
``spec.retention``; ``gc_job.retention_command`` renders the same policy and protections as
``cairn gc`` arguments, so the GC Job decides on disk exactly as ``status.retention`` says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.retention import StatusPlan, plan_from_status
from cairn_agent.resource.status import AsyncWorker
from cairn_agent.resource.times import parse_time

from cairn_operator.reconcile.spec import SpecView


def plan_for(
    spec: SpecView, status: Mapping[str, Any], *, resume_iteration: int | None
) -> StatusPlan:
    """Plan retention over the agent's reported committed iterations."""
    return plan_from_status(spec.retention, status, resume_iteration=resume_iteration)


def job_active(
    spec: SpecView, status: Mapping[str, Any], *, now: dt.datetime, pods_running: bool | None
) -> bool:
    """Whether the training job may be running, so that only its in-job retention may act.

    Live labelled pods, a save in flight, or a fresh agent heartbeat each count as running:
    the operator's GC Job must never race the job's own retention over the same root.
    """
    if pods_running or status.get(contract.SAVE_IN_PROGRESS):
        return True
    worker = AsyncWorker.from_status(status.get(contract.ASYNC_WORKER))
    if worker is None or worker.quiet:
        return False
    beat = parse_time(worker.heartbeat_time)
    return beat is not None and (now - beat).total_seconds() <= spec.heartbeat_timeout_s


def retention_summary(
    view: StatusPlan, spec: SpecView, *, max_listed: int, last_run: str | None
) -> dict[str, Any]:
    """``status.retention``: counts, the (bounded) planned deletions, dry run, last GC run."""
    summary: dict[str, Any] = {
        "retainedCount": len(view.plan.keep),
        "retainedBytes": view.retained_bytes,
        "plannedDeletions": list(view.plan.delete[:max_listed]),
        "dryRun": spec.retention.dry_run,
    }
    if last_run:
        summary["lastRun"] = last_run
    return summary
