"""Load resolution (DESIGN.md §3 "Load resolves"): which checkpoint to load, and what next.

Order: the iteration pinned by the cluster, else the tracker's target, else the newest committed
directory; a committed non-persistent checkpoint at the same or a newer iteration wins (unless
pinned). The rest of the list are fallbacks, older committed persistent iterations, newest
first, for the caller to try loudly when validation of the first fails. A tracker target that
is missing or uncommitted stays first on purpose, so that validation fails loudly instead of
this module silently skipping it. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn_agent.errors import CheckpointNotFoundError
from cairn_agent.storage import layout
from cairn_agent.storage.listing import CheckpointInfo, is_committed, list_checkpoints
from cairn_agent.storage.tracker import read_tracker

log = logging.getLogger(__name__)

Source = Literal["pinned", "tracker", "newest-committed", "non-persistent"]


@dataclass(frozen=True)
class LoadCandidate:
    """One checkpoint directory the loader may try."""

    iteration: int
    """Its iteration (0 for ``release``)."""
    path: Path
    """The iteration directory."""
    release: bool
    """True for a ``release`` directory."""
    source: Source
    """Why it is a candidate; fallbacks are ``newest-committed`` (committed persistent dirs)."""


def load_candidates(
    root: Path, *, pinned: int | None = None, non_persistent_roots: Sequence[Path] = ()
) -> list[LoadCandidate]:
    """Candidates to load, best first; [] when there is nothing to load.

    Raises ``CheckpointNotFoundError`` when ``pinned`` has no directory, and
    ``TrackerCorruptError`` when a tracker (persistent or non-persistent) is garbage.
    """
    root = Path(root)
    committed = [info for info in list_checkpoints(root) if not info.release]
    if pinned is not None:
        return _chain(committed, _pinned(root, pinned))
    primary = _primary(root, committed)
    newer = _best_non_persistent(non_persistent_roots)
    if newer is not None and (primary is None or newer.iteration >= primary.iteration):
        log.info("loading non-persistent checkpoint %s: it is at least as new", newer.path)
        return [newer, *_chain(committed, primary)]
    return _chain(committed, primary)


def _chain(committed: list[CheckpointInfo], first: LoadCandidate | None) -> list[LoadCandidate]:
    """``first`` followed by the committed persistent iterations older than it, newest first."""
    return [] if first is None else [first, *_fallbacks(committed, first)]


def _pinned(root: Path, pinned: int) -> LoadCandidate:
    path = layout.iteration_dir(root, pinned)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"{path}: pinned iteration {pinned} has no checkpoint directory under {root}"
        )
    return LoadCandidate(iteration=pinned, path=path, release=False, source="pinned")


def _primary(root: Path, committed: list[CheckpointInfo]) -> LoadCandidate | None:
    tracked = _from_tracker(root, "tracker")
    if tracked is not None:
        return tracked
    if not committed:
        return None
    newest = committed[-1]
    return LoadCandidate(newest.iteration, newest.path, False, "newest-committed")


def _from_tracker(root: Path, source: Source) -> LoadCandidate | None:
    value = read_tracker(root)
    if value is None:
        return None
    path = layout.iteration_dir(root, value.iteration, value.release)
    return LoadCandidate(value.iteration, path, value.release, source)


def _fallbacks(committed: list[CheckpointInfo], first: LoadCandidate) -> list[LoadCandidate]:
    older = [info for info in committed if info.iteration < first.iteration]
    return [
        LoadCandidate(info.iteration, info.path, False, "newest-committed")
        for info in reversed(older)
    ]


def _best_non_persistent(roots: Sequence[Path]) -> LoadCandidate | None:
    found = [c for c in (_non_persistent(Path(r)) for r in roots) if c is not None]
    return max(found, key=lambda c: c.iteration) if found else None


def _non_persistent(root: Path) -> LoadCandidate | None:
    """Committed tracker target of a non-persistent root, else its newest committed dir."""
    tracked = _from_tracker(root, "non-persistent")
    if tracked is not None and not tracked.release and is_committed(tracked.path):
        return tracked
    if tracked is not None:
        log.warning("non-persistent tracker of %s points at uncommitted %s", root, tracked.path)
    committed = [info for info in list_checkpoints(root) if not info.release]
    if not committed:
        return None
    newest = committed[-1]
    return LoadCandidate(newest.iteration, newest.path, False, "non-persistent")
