"""The pure retention planner: from iteration numbers alone, what to keep and why.

Both views call it: the disk view (``retention.disk.plan_on_disk``: in-job retention,
non-persistent clean-up, ``cairn gc``) and the status view (``cairn_agent.resource.retention``:
the operator and ``kubectl cairn describe``). Decisions are data (an action and ``Reason``s);
``explain`` is the one place they become text. Pure, deterministic, torch-free.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["keep", "delete"]


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """Which committed iterations to keep. With every field unset, everything is kept."""

    keep_last: int | None = None
    """Keep the newest N committed iterations; None keeps all. Must be >= 1."""
    keep_every: int | None = None
    """Also keep every iteration divisible by this (e.g. 1000 for milestones). Must be >= 1."""
    pinned: frozenset[int] = field(default_factory=frozenset)
    """Iterations never deleted (e.g. the ones an evaluation refers to)."""

    def __post_init__(self) -> None:
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(
                f"keep_last={self.keep_last} would delete the newest checkpoint; set it to "
                "1 or more, or leave it unset to keep every checkpoint"
            )
        if self.keep_every is not None and self.keep_every < 1:
            raise ValueError(f"keep_every={self.keep_every} must be >= 1 (or unset)")
        pinned = frozenset(self.pinned)
        if any(it < 0 for it in pinned):
            raise ValueError(f"pinned iterations must be non-negative, got {sorted(pinned)}")
        object.__setattr__(self, "pinned", pinned)


class Reason(enum.StrEnum):
    """Why an iteration is kept (all but the last) or deleted (the last)."""

    NEWER_THAN_TRACKER = "newer_than_tracker"
    TRACKER_TARGET = "tracker_target"
    RESUME_POINT = "resume_point"
    PROTECTED = "protected"
    PINNED = "pinned"
    NEWEST_VERIFIED = "newest_verified"
    NEWEST_COMMITTED = "newest_committed"
    KEEP_ALL = "keep_all"
    WITHIN_KEEP_LAST = "within_keep_last"
    MULTIPLE_OF_KEEP_EVERY = "multiple_of_keep_every"
    OLDER_THAN_KEEP_LAST = "older_than_keep_last"


@dataclass(frozen=True, kw_only=True)
class Guards:
    """What the planner keeps whatever the policy says (the safety rules, not the policy)."""

    tracker: int | None = None
    """The tracker's target: kept, and nothing newer is touched (it may still be publishing)."""
    resume_point: int | None = None
    """The iteration a run resumed (or will resume) from."""
    protected: frozenset[int] = frozenset()
    """Further iterations the caller protects (e.g. ``cairn gc --protect``)."""
    newest_verified: int | None = None
    """The newest checkpoint known to pass verification: the last good one to resume from."""
    max_iteration: int | None = None
    """Nothing above it is touched (a save that may be in flight), like above the tracker."""

    @property
    def bound(self) -> int | None:
        """The newest iteration retention may touch: the lower of tracker and max_iteration."""
        limits = [it for it in (self.tracker, self.max_iteration) if it is not None]
        return min(limits) if limits else None


@dataclass(frozen=True)
class Decision:
    """What happens to one committed iteration, and every reason for it."""

    iteration: int
    action: Action
    reasons: tuple[Reason, ...]
    """Every guard and policy rule that keeps it; ``(OLDER_THAN_KEEP_LAST,)`` for a deletion."""


@dataclass(frozen=True, kw_only=True)
class RetentionPlan:
    """A decision for every committed iteration, with what they were computed from."""

    policy: RetentionPolicy
    guards: Guards
    decisions: tuple[Decision, ...]
    """One per committed iteration, ascending."""

    @property
    def keep(self) -> tuple[int, ...]:
        """Iterations kept, ascending."""
        return tuple(d.iteration for d in self.decisions if d.action == "keep")

    @property
    def delete(self) -> tuple[int, ...]:
        """Iterations to delete, ascending (oldest first)."""
        return tuple(d.iteration for d in self.decisions if d.action == "delete")

    def decision(self, iteration: int) -> Decision:
        """The decision about ``iteration`` (``KeyError`` if it was not planned)."""
        for found in self.decisions:
            if found.iteration == iteration:
                return found
        raise KeyError(iteration)

    def explain(self, iteration: int) -> str:
        """Why ``iteration`` is kept or deleted, in words (the reasons joined by ``;``)."""
        reasons = self.decision(iteration).reasons
        return "; ".join(_text(reason, self.policy, self.guards) for reason in reasons)


def plan_retention(
    committed: Sequence[int],
    policy: RetentionPolicy,
    *,
    tracker: int | None = None,
    resume_point: int | None = None,
    protected: Iterable[int] = (),
    newest_verified: int | None = None,
    max_iteration: int | None = None,
) -> RetentionPlan:
    """Plan which committed iterations to delete. Pure: no I/O, deterministic.

    Never deletes the tracker's target, the resume point, a ``protected`` or pinned iteration,
    ``newest_verified``, the newest committed one, or anything above the tracker or
    ``max_iteration`` (a save that may still be in flight). ``keep_last`` counts iterations up
    to that bound.
    """
    guards = Guards(
        tracker=tracker,
        resume_point=resume_point,
        protected=frozenset(protected),
        newest_verified=newest_verified,
        max_iteration=max_iteration,
    )
    iterations = sorted(set(committed))
    bound = guards.bound
    eligible = [it for it in iterations if bound is None or it <= bound]
    window = set(eligible[-policy.keep_last :]) if policy.keep_last is not None else set()
    newest = iterations[-1] if iterations else None
    decisions = tuple(_decide(it, policy, guards, window, newest) for it in iterations)
    return RetentionPlan(policy=policy, guards=guards, decisions=decisions)


def _decide(
    it: int, policy: RetentionPolicy, guards: Guards, window: set[int], newest: int | None
) -> Decision:
    bound = guards.bound
    rules = [
        (bound is not None and it > bound, Reason.NEWER_THAN_TRACKER),
        (it == guards.tracker, Reason.TRACKER_TARGET),
        (it == guards.resume_point, Reason.RESUME_POINT),
        (it in guards.protected, Reason.PROTECTED),
        (it in policy.pinned, Reason.PINNED),
        (it == guards.newest_verified, Reason.NEWEST_VERIFIED),
        (it == newest, Reason.NEWEST_COMMITTED),
        (policy.keep_last is None, Reason.KEEP_ALL),
        (it in window, Reason.WITHIN_KEEP_LAST),
        (
            policy.keep_every is not None and it % policy.keep_every == 0,
            Reason.MULTIPLE_OF_KEEP_EVERY,
        ),
    ]
    kept_because = tuple(reason for applies, reason in rules if applies)
    if kept_because:
        return Decision(it, "keep", kept_because)
    return Decision(it, "delete", (Reason.OLDER_THAN_KEEP_LAST,))


def _text(reason: Reason, policy: RetentionPolicy, guards: Guards) -> str:
    """The one rendering of a reason, with the numbers it refers to."""
    match reason:
        case Reason.NEWER_THAN_TRACKER:
            return f"newer than the tracker's target {guards.bound} (may still be in flight)"
        case Reason.TRACKER_TARGET:
            return "the tracker's target"
        case Reason.RESUME_POINT:
            return "the resume point"
        case Reason.PROTECTED:
            return "protected"
        case Reason.PINNED:
            return "pinned"
        case Reason.NEWEST_VERIFIED:
            return "newest verified checkpoint"
        case Reason.NEWEST_COMMITTED:
            return "newest committed checkpoint"
        case Reason.KEEP_ALL:
            return "keep_last unset (keep all)"
        case Reason.WITHIN_KEEP_LAST:
            return f"within keep_last={policy.keep_last}"
        case Reason.MULTIPLE_OF_KEEP_EVERY:
            return f"multiple of keep_every={policy.keep_every}"
        case Reason.OLDER_THAN_KEEP_LAST:
            every = f" and not a multiple of keep_every={policy.keep_every}"
            return f"older than the newest {policy.keep_last}{every if policy.keep_every else ''}"
