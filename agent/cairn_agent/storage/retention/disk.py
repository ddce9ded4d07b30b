"""The disk view of retention: one plan over a checkpoint root as it is on disk.

In-job retention, non-persistent clean-up and ``cairn gc`` all plan through
``plan_on_disk``: it lists the committed iterations, reads the tracker (its target is kept and
nothing newer is touched), finds the newest checkpoint that passes verification (kept: the last
good one to resume from) and lists the leftovers of interrupted saves. Reading only; deleting is
``apply_retention``. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.listing import LeftoverKind, committed_iterations, list_leftovers
from cairn_agent.storage.manifest import verify_checkpoint_dir
from cairn_agent.storage.retention.plan import RetentionPlan, RetentionPolicy, plan_retention
from cairn_agent.storage.tracker import read_tracker


@dataclass(frozen=True, kw_only=True)
class DiskPlan:
    """A retention plan over a root, with what was found there."""

    plan: RetentionPlan
    """The decision for every committed iteration."""
    tracker: int | None
    """The tracker's target (None without a tracker, or when it reads ``release``)."""
    newest_verified: int | None
    """The newest committed iteration that passed verification (or the caller vouched for)."""
    corrupt: tuple[str, ...]
    """Verification failures of the committed iterations newer than ``newest_verified``."""
    leftovers: tuple[tuple[LeftoverKind, str], ...]
    """Hidden entries of interrupted saves and deletions: ``(kind, name)``."""


def plan_on_disk(
    root: Path,
    policy: RetentionPolicy,
    *,
    protected: Iterable[int] = (),
    resume_point: int | None = None,
    deep: bool = False,
    known_verified: int | None = None,
    max_iteration: int | None = None,
) -> DiskPlan:
    """Plan retention of ``root`` under ``policy``; see ``plan_retention`` for what is kept.

    ``deep`` checksums files while looking for the newest verified checkpoint (sizes only
    otherwise). ``known_verified`` skips that search: the caller has just committed and
    verified that iteration itself (in-job retention). Raises ``TrackerCorruptError`` for a
    garbage tracker: without knowing its target nothing may be deleted.
    """
    root = Path(root)
    committed = committed_iterations(root)
    tracker = _tracker_target(root)
    if known_verified is None:
        newest_verified, corrupt = newest_verified_iteration(root, committed, deep=deep)
    else:
        newest_verified, corrupt = known_verified, []
    plan = plan_retention(
        committed,
        policy,
        tracker=tracker,
        resume_point=resume_point,
        protected=protected,
        newest_verified=newest_verified,
        max_iteration=max_iteration,
    )
    return DiskPlan(
        plan=plan,
        tracker=tracker,
        newest_verified=newest_verified,
        corrupt=tuple(corrupt),
        leftovers=tuple((kind, path.name) for kind, path in list_leftovers(root)),
    )


def _tracker_target(root: Path) -> int | None:
    tracker = read_tracker(root)
    return tracker.iteration if tracker is not None and not tracker.release else None


def newest_verified_iteration(
    root: Path, committed: Iterable[int], *, deep: bool
) -> tuple[int | None, list[str]]:
    """The newest committed iteration that passes verification, and the failures above it."""
    failures: list[str] = []
    for iteration in sorted(committed, reverse=True):
        try:
            verify_checkpoint_dir(layout.iteration_dir(root, iteration), deep=deep)
        except CheckpointCorruptError as exc:
            failures.append(str(exc))
            continue
        return iteration, failures
    return None, failures
