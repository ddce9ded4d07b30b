"""The operator's view of retention: the same planner as the agent and ``cairn gc``.

``plan_for`` feeds ``cairn_agent.storage.retention.plan_retention`` (the one implementation of
retention) with what the agent reported, protecting the resume point and the tracker's target;
``gc_arguments`` renders the same policy as ``cairn gc`` flags, so the GC Job decides on disk
exactly as the plan shown in ``status.retention`` says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cairn_agent import contract
from cairn_agent.storage.retention import RetentionPlan, RetentionPolicy, plan_retention

from cairn_operator.reconcile.conditions import parse_time
from cairn_operator.reconcile.health import QUIET_STATES
from cairn_operator.reconcile.saved import corrupt_iterations, newest_verified, saved_iterations
from cairn_operator.reconcile.spec import SpecView


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionView:
    """A plan plus what it was computed from."""

    plan: RetentionPlan
    """The planner's output over the reported committed iterations."""
    protected: tuple[int, ...]
    """Iterations protected beyond the policy (resume point, tracker target)."""
    retained_bytes: int
    """Sum of the reported sizes of the kept iterations."""


def policy_of(spec: SpecView) -> RetentionPolicy:
    """``spec.retention`` as the planner's policy."""
    return RetentionPolicy(
        keep_last=spec.keep_last, keep_every=spec.keep_every, pinned=frozenset(spec.pinned)
    )


def _protected(status: Mapping[str, Any], resume_iteration: int | None) -> tuple[int, ...]:
    candidates = {resume_iteration, status.get(contract.LATEST_COMMITTED)}
    return tuple(sorted(it for it in candidates if isinstance(it, int)))


def plan_for(
    spec: SpecView, status: Mapping[str, Any], *, resume_iteration: int | None
) -> RetentionView:
    """Plan retention over the agent's reported committed iterations."""
    saved = saved_iterations(status)
    bad = corrupt_iterations(status)
    protected = _protected(status, resume_iteration)
    in_flight = status.get(contract.SAVE_IN_PROGRESS)
    # While a save is in flight nothing above the newest commit may be planned away.
    max_iteration = status.get(contract.LATEST_COMMITTED) if in_flight else None
    plan = plan_retention(
        [s.iteration for s in saved],
        policy_of(spec),
        protected=protected,
        newest_verified=newest_verified(saved, bad),
        max_iteration=max_iteration if isinstance(max_iteration, int) else None,
    )
    kept = set(plan.keep)
    size = sum(s.bytes for s in saved if s.iteration in kept)
    return RetentionView(plan=plan, protected=protected, retained_bytes=size)


def job_active(
    spec: SpecView, status: Mapping[str, Any], *, now: dt.datetime, pods_running: bool | None
) -> bool:
    """Whether the training job may be running, so that only its in-job retention may act.

    Live labelled pods, a save in flight, or a fresh agent heartbeat each count as running:
    the operator's GC Job must never race the job's own retention over the same root.
    """
    if pods_running or status.get(contract.SAVE_IN_PROGRESS):
        return True
    worker = status.get(contract.ASYNC_WORKER)
    if not isinstance(worker, Mapping) or worker.get("state") in QUIET_STATES:
        return False
    beat = parse_time(worker.get("heartbeatTime"))
    return beat is not None and (now - beat).total_seconds() <= spec.heartbeat_timeout_s


def retention_summary(
    view: RetentionView, spec: SpecView, *, max_listed: int, last_run: str | None
) -> dict[str, Any]:
    """``status.retention``: counts, the (bounded) planned deletions, dry run, last GC run."""
    summary: dict[str, Any] = {
        "retainedCount": len(view.plan.keep),
        "retainedBytes": view.retained_bytes,
        "plannedDeletions": list(view.plan.delete[:max_listed]),
        "dryRun": spec.dry_run,
    }
    if last_run:
        summary["lastRun"] = last_run
    return summary


def gc_arguments(spec: SpecView, protected: tuple[int, ...], *, deep: bool = False) -> list[str]:
    """``cairn gc`` arguments that apply ``spec.retention`` to the checkpoint root."""
    args = ["gc", spec.path]
    if spec.keep_last is not None:
        args += ["--keep-last", str(spec.keep_last)]
    if spec.keep_every is not None:
        args += ["--keep-every", str(spec.keep_every)]
    if spec.pinned:
        args += ["--pin", *(str(p) for p in spec.pinned)]
    if protected:
        args += ["--protect", *(str(p) for p in protected)]
    if deep:
        args.append("--deep")
    return args


def delete_all_arguments(spec: SpecView) -> list[str]:
    """``cairn gc`` arguments that remove everything under the root (deletionPolicy Delete)."""
    return ["gc", spec.path, "--delete-all"]
