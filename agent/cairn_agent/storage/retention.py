"""Retention: the one pure planner and its safe application (DESIGN.md §3 steps 5 and 7).

``plan_retention`` decides, from iteration numbers alone, what to keep and why; the agent uses
it in-job after the tracker is durable, the operator for dry-run plans, and ``cairn gc`` for
offline enforcement, so all three agree. ``apply_retention`` re-checks the fence and the
tracker before every deletion, because the plan may be stale by the time it runs. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, new_nonce
from cairn_agent.storage.generation import ensure_current, root_lock
from cairn_agent.storage.tracker import read_tracker

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention pass would keep and delete, with a reason for every iteration."""

    keep: tuple[int, ...]
    """Iterations kept, ascending."""
    delete: tuple[int, ...]
    """Iterations to delete, ascending (oldest first)."""
    reasons: Mapping[int, str]
    """Iteration -> why it is kept or deleted."""


def plan_retention(
    committed: Sequence[int],
    policy: RetentionPolicy,
    *,
    protected: Iterable[int] = (),
    newest_verified: int | None = None,
    max_iteration: int | None = None,
) -> RetentionPlan:
    """Plan which committed iterations to delete. Pure: no I/O, deterministic.

    Never deletes: a ``protected`` iteration (tracker target, resume point), a pinned one,
    ``newest_verified``, the newest committed one, or anything above ``max_iteration`` (a save
    that may still be in flight). ``keep_last`` counts iterations up to ``max_iteration``.
    """
    iterations = sorted(set(committed))
    eligible = [it for it in iterations if max_iteration is None or it <= max_iteration]
    window = set(eligible[-policy.keep_last :]) if policy.keep_last is not None else set(eligible)
    guards = _Guards(
        protected=frozenset(protected),
        newest_verified=newest_verified,
        newest=iterations[-1] if iterations else None,
        max_iteration=max_iteration,
    )
    reasons = {it: _reason(it, policy, guards, window) for it in iterations}
    keep = tuple(it for it in iterations if not reasons[it].startswith(_DELETE))
    delete = tuple(it for it in iterations if reasons[it].startswith(_DELETE))
    return RetentionPlan(keep=keep, delete=delete, reasons=reasons)


_DELETE = "delete: "


@dataclass(frozen=True)
class _Guards:
    protected: frozenset[int]
    newest_verified: int | None
    newest: int | None
    max_iteration: int | None


def _keep_reasons(it: int, policy: RetentionPolicy, guards: _Guards, window: set[int]) -> list[str]:
    checks = [
        (
            guards.max_iteration is not None and it > guards.max_iteration,
            f"newer than max_iteration {guards.max_iteration} (may still be in flight)",
        ),
        (it in guards.protected, "protected (tracker target or resume point)"),
        (it in policy.pinned, "pinned"),
        (it == guards.newest_verified, "newest verified checkpoint"),
        (it == guards.newest, "newest committed checkpoint"),
        (policy.keep_last is None, "keep_last unset (keep all)"),
        (policy.keep_last is not None and it in window, f"within keep_last={policy.keep_last}"),
        (
            policy.keep_every is not None and it % policy.keep_every == 0,
            f"multiple of keep_every={policy.keep_every}",
        ),
    ]
    return [why for applies, why in checks if applies]


def _reason(it: int, policy: RetentionPolicy, guards: _Guards, window: set[int]) -> str:
    kept_because = _keep_reasons(it, policy, guards, window)
    if kept_because:
        return "keep: " + "; ".join(kept_because)
    every = f" and not a multiple of keep_every={policy.keep_every}" if policy.keep_every else ""
    return f"{_DELETE}older than the newest {policy.keep_last}{every}"


def apply_retention(
    root: Path, plan: RetentionPlan, *, generation: int, io: DurableIO = DEFAULT_IO
) -> list[int]:
    """Delete ``plan.delete`` under ``root``, oldest first; return the iterations deleted.

    Raises ``StaleGenerationError`` (before deleting anything) when a newer restart generation
    owns the root. Each directory is renamed to a hidden trash name and the rename made durable
    before removal, so a crash mid-removal never leaves a half-deleted "committed" checkpoint.
    The tracker is re-read before each deletion and its target is skipped whatever the plan says.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    ensure_current(root, generation)
    deleted: list[int] = []
    for iteration in sorted(plan.delete):
        trash = _move_to_trash(root, iteration, generation, io)
        if trash is None:
            continue
        io.remove_tree(trash)
        log.info("retention: deleted iteration %d (%s)", iteration, plan.reasons.get(iteration))
        deleted.append(iteration)
    return deleted


def _move_to_trash(root: Path, iteration: int, generation: int, io: DurableIO) -> Path | None:
    """Under the root lock: re-check fence and tracker, then rename the dir aside durably."""
    final = layout.iteration_dir(root, iteration)
    with root_lock(root):
        ensure_current(root, generation)
        tracker = read_tracker(root)
        if tracker is not None and not tracker.release and tracker.iteration == iteration:
            log.warning("retention: kept iteration %d: it is the tracker's target", iteration)
            return None
        if not final.is_dir():
            log.info("retention: iteration %d already gone", iteration)
            return None
        trash = root / layout.trash_dir_name(final.name, new_nonce())
        io.rename(final, trash)
        io.fsync_dir(root)
    return trash
