"""The ``PreemptionSafe`` condition: does a final save fit in the pods' grace period? Pure.

On SIGTERM the job finishes the step it is in, then commits a persistent save, all before the
kubelet's SIGKILL at ``terminationGracePeriodSeconds``. So the grace period must hold one step
plus one durable save, with room for the spread of save times and the signal's own latency::

    needed = (p95 of recent persistent save durations + one step) * (1 + MARGIN_FRACTION)
             + MARGIN_SECONDS
    PreemptionSafe = needed <= terminationGracePeriodSeconds

Save durations are the agent's ``saveStats.persistent.recentDurableSeconds`` (save start to
commit); agents that do not report them give ``recentStallSeconds`` (the time a save blocked
training: the whole save when synchronous, so the same thing there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from cairn_agent.resource import contract

MARGIN_FRACTION: Final = 0.2
MARGIN_SECONDS: Final = 5.0

Status = Literal["True", "False", "Unknown"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    """The condition's status, reason and message, and the numbers behind it."""

    status: Status
    reason: str
    message: str
    needed_seconds: float | None = None


def p95(samples: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (of few samples, the largest or next to it)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def needed_seconds(save_p95: float, step: float) -> float:
    """The grace period a final save needs (the formula of this module's docstring)."""
    return (save_p95 + step) * (1 + MARGIN_FRACTION) + MARGIN_SECONDS


def _numbers(values: object) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and v >= 0]


def _samples(stats: Mapping[str, Any]) -> tuple[list[float], str]:
    persistent = stats.get("persistent")
    tier = persistent if isinstance(persistent, Mapping) else {}
    durable = _numbers(tier.get("recentDurableSeconds"))
    if durable:
        return durable, "save durations"
    return _numbers(tier.get("recentStallSeconds")), "save stalls"


def judge(status: Mapping[str, Any], grace_seconds: int, *, grace_source: str) -> Verdict:
    """``PreemptionSafe`` for the agent's ``status`` and pods of ``grace_seconds``.

    ``grace_source`` says where the grace period came from (for the message)."""
    stats = status.get(contract.SAVE_STATS)
    samples, kind = _samples(stats if isinstance(stats, Mapping) else {})
    if not samples:
        return Verdict(
            status="Unknown",
            reason="NoMeasurements",
            message="no persistent save measured yet; the job reports save times after its "
            "first persistent save",
        )
    step_value = stats.get("stepTimeSeconds") if isinstance(stats, Mapping) else None
    step = float(step_value) if isinstance(step_value, int | float) else 0.0
    save = p95(samples)
    needed = needed_seconds(save, step)
    numbers = (
        f"p95 of the last {len(samples)} persistent {kind} {save:.1f}s + one step {step:.1f}s, "
        f"with a {MARGIN_FRACTION:.0%} + {MARGIN_SECONDS:.0f}s margin, needs {needed:.1f}s; "
        f"terminationGracePeriodSeconds is {grace_seconds} ({grace_source})"
    )
    if needed <= grace_seconds:
        return Verdict(
            status="True", reason="FitsGracePeriod", message=numbers, needed_seconds=needed
        )
    fix = (
        f"set terminationGracePeriodSeconds (and CAIRN_TERMINATION_GRACE_SECONDS) to at least "
        f"{math.ceil(needed)}, or make the final save faster: a node-local tier "
        "(spec.save.nonPersistentType: local), async saves with a persistent worker "
        "(spec.asyncWorker) so less is left to write, or fewer bytes per rank"
    )
    return Verdict(
        status="False",
        reason="SaveExceedsGracePeriod",
        message=f"{numbers}: a preempted job would be killed before its final save commits; {fix}",
        needed_seconds=needed,
    )
