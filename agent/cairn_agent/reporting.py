"""What the seed-API facade tells the cluster: commits, deletions, resumes, corrupt checkpoints.

Rank 0 only, through :class:`~cairn_agent.cluster.StatusReporter`, which is disabled (every call
a no-op) unless the pod names its Checkpoint in ``$CAIRN_CHECKPOINT``. Reports never raise into
training: the reporter queues them and a background thread sends them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cairn_agent.cluster import StatusReporter
from cairn_agent.engine import dist
from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage.manifest import read_manifest
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_cairn_status_reporter"
# Reasons for which the operator's resume point overrides the tracker: an SRE pinned an
# iteration, or the tracker's target was reported corrupt and the operator moved back.
CLUSTER_PIN_REASONS = frozenset({"Pinned", "FallbackFromCorrupt"})


def reporter(state: Any) -> StatusReporter | None:
    """Rank 0's reporter of ``state`` (created on first use); None elsewhere or when disabled."""
    if dist.get_rank() != 0:
        return None
    found: StatusReporter | None = getattr(state, _ATTRIBUTE, None)
    if found is None:
        found = StatusReporter()
        setattr(state, _ATTRIBUTE, found)
    return found if found.enabled else None


def saved(state: Any, directory: Path, iteration: int) -> None:
    """A checkpoint was committed and its tracker published."""
    target = reporter(state)
    if target is None:
        return
    try:
        manifest = read_manifest(directory)
    except CheckpointCorruptError as exc:
        logger.warning("rank 0: not reporting iteration %d: %s", iteration, exc)
        return
    target.report_saved(
        iteration,
        committed_at=dt.datetime.fromtimestamp(manifest.committed_at, dt.UTC),
        bytes=manifest.total_bytes,
        files=len(manifest.files),
        manifest_digest=manifest.digest(),
        verified=True,
    )


def deleted(state: Any, iterations: Iterable[int]) -> None:
    """Retention removed these iterations."""
    gone = list(iterations)
    target = reporter(state)
    if target is not None and gone:
        target.report_deleted(gone)


def resumed(state: Any, candidate: LoadCandidate) -> None:
    """The job resumed from ``candidate``."""
    target = reporter(state)
    if target is not None:
        target.report_resume(candidate.iteration, candidate.source, int(state.generation))


def corrupt(state: Any, candidate: LoadCandidate, error: BaseException) -> None:
    """``candidate`` could not be loaded and was skipped."""
    target = reporter(state)
    if target is None:
        return
    if isinstance(error, CheckpointCorruptError):
        target.report_corrupt(candidate.iteration, str(error.path), error.check)
    else:
        target.report_corrupt(
            candidate.iteration, str(candidate.path), f"{type(error).__name__}: {error}"
        )


def cluster_pin(state: Any) -> int | None:
    """The iteration the cluster pinned this job's resume to, the same on every rank.

    Rank 0 reads ``status.resumeFrom`` of its Checkpoint once; it counts only when the
    operator deliberately moved away from the tracker (``CLUSTER_PIN_REASONS``). Collective.
    """
    pin: int | None = None
    target = reporter(state)
    point = target.published_resume_point() if target is not None else None
    if point is not None and point.get("reason") in CLUSTER_PIN_REASONS:
        iteration = point.get("iteration")
        if isinstance(iteration, int) and iteration >= 0:
            pin = iteration
            logger.info(
                "rank 0: the cluster pinned the resume point to iteration %d (%s)",
                pin,
                point.get("reason"),
            )
    result: int | None = dist.broadcast_object(pin)
    return result
