"""What the seed-API facade tells the cluster: commits, deletions, resumes, corrupt checkpoints.

Rank 0 only, through :class:`~cairn_agent.cluster.StatusReporter`, which is disabled (every call
a no-op) unless the pod names its Checkpoint in ``$CAIRN_CHECKPOINT``. Reports never raise into
training: the reporter queues them and a background thread sends them.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cairn_agent.cluster import StatusReporter
from cairn_agent.engine import dist
from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.resource import contract
from cairn_agent.resource.status import LocalTier, ResumeTier, SavePhase, WorkerState
from cairn_agent.state.run import run_of
from cairn_agent.storage.manifest import read_manifest
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)


MIN_INTERVAL_ENV = "CAIRN_STATUS_MIN_INTERVAL_S"
DEFAULT_MIN_INTERVAL_S = 5.0
_EXIT_FLUSH_TIMEOUT_S = 10.0
_MAX_CHECK_CHARS = 300
# Reasons for which the operator's resume point overrides the tracker: an SRE pinned an
# iteration, or the tracker's target was reported corrupt and the operator moved back.
CLUSTER_PIN_REASONS = frozenset({"Pinned", "FallbackFromCorrupt"})


def _min_interval_s() -> float:
    """Seconds between two status patches: ``$CAIRN_STATUS_MIN_INTERVAL_S``, default 5."""
    raw = os.environ.get(MIN_INTERVAL_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_MIN_INTERVAL_S
    except ValueError:
        logger.warning("ignoring %s=%r: not a number of seconds", MIN_INTERVAL_ENV, raw)
        return DEFAULT_MIN_INTERVAL_S


def reporter(state: Any) -> StatusReporter | None:
    """Rank 0's reporter of ``state`` (created on first use); None elsewhere or when disabled."""
    if dist.get_rank() != 0:
        return None
    run = run_of(state)
    found: StatusReporter | None = run.reporter
    if found is None:
        found = StatusReporter(min_interval_s=_min_interval_s())
        run.reporter = found
        if found.enabled:
            # The sender is a daemon thread throttled to one patch per interval: without a
            # flush at exit, a job's last reports (often its newest save) would be lost.
            atexit.register(found.close, _EXIT_FLUSH_TIMEOUT_S)
    return found if found.enabled else None


def saved(state: Any, directory: Path, iteration: int) -> None:
    """A checkpoint was committed and its tracker published."""
    _durable_time(state, iteration)
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


def fields(state: Any, values: dict[str, Any]) -> None:
    """Rank 0: merge-patch agent-owned status keys (``contract.AGENT_STATUS_KEYS``)."""
    target = reporter(state)
    if target is not None:
        target.report_fields(values)


def _durable_time(state: Any, iteration: int) -> None:
    """Record how long the save of ``iteration`` took from its start to its commit."""
    run = run_of(state)
    started = run.save_started.pop(iteration, None)
    if started is not None:
        _sample(state, "persistentDurable", time.monotonic() - started)


def save_stall(state: Any, seconds: float, *, non_persistent: bool) -> None:
    """Rank 0: how long one save blocked training, for the operator's adaptive interval."""
    _sample(state, "nonPersistent" if non_persistent else "persistent", seconds)


_STATS_FIELDS = {
    "persistent": ("persistent", "recentStallSeconds"),
    "persistentDurable": ("persistent", "recentDurableSeconds"),
    "nonPersistent": ("nonPersistent", "recentStallSeconds"),
}


def _sample(state: Any, series: str, seconds: float) -> None:
    """Append to one series and report the whole of ``status.saveStats`` (newest last).

    The whole object each time: reports are coalesced by top-level key before they are sent,
    so a partial one would drop the other series.
    """
    run = run_of(state)
    samples = run.save_stalls.setdefault(series, [])
    samples.append(round(seconds, 4))
    del samples[: -contract.MAX_SAVE_STATS]
    target = reporter(state)
    if target is None:
        return
    stats: dict[str, Any] = {}
    for name, values in run.save_stalls.items():
        tier, key = _STATS_FIELDS[name]
        stats.setdefault(tier, {})[key] = list(values)
    step = run.control.step_time_s() if run.control is not None else None
    if step is not None:
        stats["stepTimeSeconds"] = round(step, 6)
    target.report_fields({contract.SAVE_STATS: stats})


def save_phase(
    state: Any, iteration: int | None, phase: SavePhase | None, *, is_async: bool
) -> None:
    """A save of ``iteration`` entered ``phase``; None clears it."""
    target = reporter(state)
    if target is not None:
        target.report_save_phase(iteration, phase, is_async=is_async)


def worker_heartbeat(state: Any, worker_state: WorkerState, pid: int | None) -> None:
    """The async worker is alive (throttled by the reporter, so calling every step is fine)."""
    target = reporter(state)
    if target is not None:
        target.report_heartbeat(worker_state, pid)


def deleted(state: Any, iterations: Iterable[int]) -> None:
    """Retention removed these iterations."""
    gone = list(iterations)
    target = reporter(state)
    if target is not None and gone:
        target.report_deleted(gone)


def resumed(
    state: Any,
    candidate: LoadCandidate,
    tier: ResumeTier | None = None,
    reason: str | None = None,
) -> None:
    """The job resumed from ``candidate``, read from ``tier`` (``reason``: why not a newer one)."""
    target = reporter(state)
    if target is not None:
        target.report_resume(
            candidate.iteration, candidate.source, run_of(state).generation, tier, reason
        )


def local_tier(state: Any, entry: LocalTier) -> None:
    """What the node-local tier holds now (after a local commit, or as a load found it)."""
    target = reporter(state)
    if target is not None:
        fields: dict[str, Any] = {contract.LOCAL_TIER: entry.to_status()}
        if entry.iteration >= 0:
            fields[contract.LATEST_LOCAL] = entry.iteration
        target.report_fields(fields)


def corrupt(state: Any, candidate: LoadCandidate, error: BaseException) -> None:
    """``candidate`` could not be loaded and was skipped."""
    target = reporter(state)
    if target is None:
        return
    if isinstance(error, CheckpointCorruptError):
        target.report_corrupt(candidate.iteration, str(error.path), error.check)
    else:
        # One line: this text lands in status.corruptIterations and in an Event message.
        first_line = next(iter(str(error).strip().splitlines()), "")
        check = f"{type(error).__name__}: {first_line}"[:_MAX_CHECK_CHARS]
        target.report_corrupt(candidate.iteration, str(candidate.path), check)


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
