"""Carrying out a retention plan safely (DESIGN.md §3 step 7).

The plan may be stale by the time it runs, so every deletion re-checks, under the root lock,
the restart-generation fence and the tracker. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, new_nonce
from cairn_agent.storage.generation import ensure_current, root_lock
from cairn_agent.storage.retention.plan import RetentionPlan
from cairn_agent.storage.tracker import read_tracker

log = logging.getLogger(__name__)


def apply_retention(
    root: Path, plan: RetentionPlan, *, generation: int, io: DurableIO = DEFAULT_IO
) -> list[int]:
    """Delete ``plan.delete`` under ``root``, oldest first; return the iterations deleted."""
    return delete_iterations(root, plan.delete, generation=generation, io=io, why=plan.explain)


def delete_iterations(
    root: Path,
    iterations: Iterable[int],
    *,
    generation: int,
    io: DurableIO = DEFAULT_IO,
    why: Callable[[int], str] | None = None,
) -> list[int]:
    """Delete these committed iterations under ``root``, oldest first; return those deleted.

    Raises ``StaleGenerationError`` (before deleting anything) when a newer restart generation
    owns the root. Each directory is renamed to a hidden trash name and the rename made durable
    before removal, so a crash mid-removal never leaves a half-deleted "committed" checkpoint.
    The tracker is re-read before each deletion and its target is skipped whatever the caller
    says. ``why`` explains each deletion in the log.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    ensure_current(root, generation)
    deleted: list[int] = []
    for iteration in sorted(iterations):
        trash = _move_to_trash(root, iteration, generation, io)
        if trash is None:
            continue
        io.remove_tree(trash)
        log.info("retention: deleted iteration %d (%s)", iteration, why(iteration) if why else "")
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
