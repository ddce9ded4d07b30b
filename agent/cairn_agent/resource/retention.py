"""The status view of retention: one plan over what a Checkpoint's status reports.

The operator publishes this plan in ``status.retention`` and ``kubectl cairn describe`` prints
it; both call ``plan_from_status``, so the two never disagree. It feeds the same pure core as
the disk view (``cairn_agent.storage.retention``): the tracker's target is approximated by
``latestCommittedIteration``, the newest verified checkpoint is the newest one the agent
verified and nobody reported corrupt. ``gc_options`` turns the plan into the ``cairn gc`` run
that re-plans on disk with the same policy and protections. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.spec import RetentionSpec, as_int
from cairn_agent.resource.status import (
    corrupt_iterations,
    latest_committed,
    newest_verified,
    saved_iterations,
)
from cairn_agent.storage.retention import GcOptions, RetentionPlan, RetentionPolicy, plan_retention


@dataclass(frozen=True, kw_only=True)
class StatusPlan:
    """A plan over the reported iterations, plus what it was computed from."""

    plan: RetentionPlan
    """The decision for every reported committed iteration."""
    protected: tuple[int, ...]
    """Iterations protected beyond the policy (resume point, tracker target), ascending."""
    retained_bytes: int
    """Sum of the reported sizes of the kept iterations."""


def policy_of(retention: RetentionSpec) -> RetentionPolicy:
    """``spec.retention`` as the planner's policy (``ValueError`` for an invalid one)."""
    return RetentionPolicy(
        keep_last=retention.keep_last,
        keep_every=retention.keep_every,
        pinned=frozenset(retention.pinned),
    )


def published_resume_point(status: Mapping[str, Any]) -> int | None:
    """``status.resumeFrom.iteration`` as the operator published it."""
    point = status.get(contract.RESUME_FROM)
    return as_int(point.get("iteration")) if isinstance(point, Mapping) else None


def plan_from_status(
    retention: RetentionSpec, status: Mapping[str, Any], *, resume_iteration: int | None
) -> StatusPlan:
    """Plan ``retention`` over the committed iterations the agent reported in ``status``."""
    saved = saved_iterations(status)
    tracker = latest_committed(status)
    plan = plan_retention(
        [s.iteration for s in saved],
        policy_of(retention),
        tracker=tracker,
        resume_point=resume_iteration,
        newest_verified=newest_verified(saved, corrupt_iterations(status)),
    )
    kept = set(plan.keep)
    return StatusPlan(
        plan=plan,
        protected=tuple(sorted({it for it in (tracker, resume_iteration) if it is not None})),
        retained_bytes=sum(s.bytes for s in saved if s.iteration in kept),
    )


def gc_options(retention: RetentionSpec, view: StatusPlan, *, deep: bool = False) -> GcOptions:
    """The ``cairn gc`` run that applies ``retention`` on disk with the plan's protections;
    ``deep`` (``spec.verification.deep``) checksums files when finding the newest verified."""
    return GcOptions(policy=policy_of(retention), protect=frozenset(view.protected), deep=deep)
