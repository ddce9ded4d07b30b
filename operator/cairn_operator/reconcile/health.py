"""Health of a job's checkpointing from the agent's reports: the ``Degraded`` condition.

``SaveStalled``: a save has been in flight longer than ``saveStallSeconds``.
``AgentSilent``: the agent's heartbeat is older than ``heartbeatTimeoutSeconds`` while its worker
claims to be alive. Neither applies when the job is known not to be running (its pods are gone),
because a finished job is silent by design.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.status import AsyncWorker
from cairn_agent.resource.times import parse_time

from cairn_operator.reconcile.spec import SpecView

REASON_HEALTHY = "Healthy"
REASON_SAVE_STALLED = "SaveStalled"
REASON_AGENT_SILENT = "AgentSilent"


@dataclasses.dataclass(frozen=True)
class Health:
    """The verdict for the ``Degraded`` condition."""

    degraded: bool
    """Whether the condition is True."""
    reason: str
    """Healthy, SaveStalled or AgentSilent."""
    message: str
    """What was observed, with ages in seconds."""


def _age(status: Mapping[str, Any], key: str, field: str, now: dt.datetime) -> float | None:
    section = status.get(key)
    moment = parse_time(section.get(field)) if isinstance(section, Mapping) else None
    return None if moment is None else (now - moment).total_seconds()


def assess_health(
    spec: SpecView, status: Mapping[str, Any], *, now: dt.datetime, job_running: bool | None
) -> Health:
    """Judge health at ``now``; ``job_running`` False (pods known gone) suppresses both checks.

    Messages carry the observed timestamps, not ages, so that re-judging a condition that has
    not changed yields the same text and no status write.
    """
    if job_running is False:
        return Health(False, REASON_HEALTHY, "the job is not running")
    save_age = _age(status, contract.SAVE_IN_PROGRESS, "startedAt", now)
    if save_age is not None and save_age > spec.save_stall_s:
        flight = status.get(contract.SAVE_IN_PROGRESS) or {}
        return Health(
            True,
            REASON_SAVE_STALLED,
            f"the save of iteration {flight.get('iteration')} started at {flight.get('startedAt')} "
            f"is still in flight after saveStallSeconds={spec.save_stall_s}",
        )
    worker = AsyncWorker.from_status(status.get(contract.ASYNC_WORKER))
    beat_age = _age(status, contract.ASYNC_WORKER, "heartbeatTime", now)
    quiet = worker is not None and worker.quiet
    if beat_age is not None and not quiet and beat_age > spec.heartbeat_timeout_s:
        return Health(
            True,
            REASON_AGENT_SILENT,
            f"no agent heartbeat since {worker.heartbeat_time if worker else None} (limit "
            f"heartbeatTimeoutSeconds={spec.heartbeat_timeout_s}); the async worker may be hung",
        )
    return Health(False, REASON_HEALTHY, "agent heartbeat and saves are on time")
