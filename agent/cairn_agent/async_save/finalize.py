"""Finalize one async save across ranks: agree, write DCP ``.metadata``, commit, publish.

Runs in the training processes, never in a worker, and every rank calls it for the same save
at the same point. The commit itself is the engine's (``engine.save.agree_and_gather`` and
``commit_step``), so async and sync saves commit exactly the same way; the only async-specific
step is the coordinator writing DCP's ``.metadata`` from every rank's write results, which the
sync path gets from ``dcp.save`` itself.

Whatever fails on whichever rank, every rank raises ``AsyncSaveError`` for that iteration, the
staging directory is removed, and the tracker keeps pointing at the previous checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.storage import WriteResult

from cairn_agent.async_save.request import AsyncRequest
from cairn_agent.async_save.writer import RankWriteOutcome
from cairn_agent.engine import collectives
from cairn_agent.engine import dist as cdist
from cairn_agent.engine.collectives import COORDINATOR
from cairn_agent.engine.dcp_files import ChecksumFileSystemWriter
from cairn_agent.engine.save import SaveTarget, agree_and_gather, commit_step
from cairn_agent.engine.sharded import RankWriteResult
from cairn_agent.errors import AsyncSaveError, CommitError
from cairn_agent.storage import layout
from cairn_agent.storage.commit import abort_staging_dir
from cairn_agent.storage.durable import DurableIO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _AsyncRankResult(RankWriteResult):
    """A rank's file descriptions plus the DCP write results the coordinator's metadata needs."""

    write_results: list[WriteResult] = field(default_factory=list)


@dataclass(kw_only=True)
class InFlightSave:
    """One async save from its schedule to its finalize, as this rank sees it."""

    job_id: int
    """The worker's job number of this save."""
    request: AsyncRequest
    """The ``AsyncRequest`` (its target, and what runs once it is committed)."""
    staging: Path
    metadata: Metadata | None
    """Global DCP metadata (coordinator only)."""
    started_at: float
    outcome: RankWriteOutcome | None = None
    """This rank's files once its worker wrote them."""
    error: str | None = None
    """Why this rank's part failed, if it did."""

    @property
    def target(self) -> SaveTarget:
        return self.request.target

    @property
    def done(self) -> bool:
        """The worker answered (files or an error)."""
        return self.outcome is not None or self.error is not None


def finalize_save(
    save: InFlightSave, *, io: DurableIO, group: dist.ProcessGroup | None = None
) -> None:
    """COLLECTIVE: commit and publish ``save``, or raise ``AsyncSaveError`` on every rank."""
    iteration = save.target.iteration
    failures = _rank_failures(save.error, group)
    if failures:
        _abort(save.staging, io, group)
        log.error("iteration %d: async save failed on ranks %s", iteration, sorted(failures))
        raise AsyncSaveError(iteration, failures)
    rank = cdist.get_rank(group)
    outcome = save.outcome or RankWriteOutcome([], {})
    mine = _AsyncRankResult(rank, outcome.files, outcome.write_results)
    save.target.phase("Finalizing")
    try:
        results = agree_and_gather(save.staging, mine, iteration=iteration, io=io, group=group)
        results = collectives.run_agreed(
            "writing DCP .metadata", lambda: _write_dcp_metadata(save, results), group
        )
        commit_step(
            save.staging, save.target, results, started_at=save.started_at, io=io, group=group
        )
    except CommitError as exc:
        _abort(save.staging, io, group)
        raise AsyncSaveError(iteration, {rank: str(exc)}) from exc


def _rank_failures(error: str | None, group: dist.ProcessGroup | None) -> dict[int, str]:
    """Every rank's worker error, on every rank (empty when all succeeded)."""
    reports = cdist.all_gather_object(error, group)
    return {rank: text for rank, text in enumerate(reports) if text is not None}


def _write_dcp_metadata(
    save: InFlightSave, results: list[RankWriteResult] | None
) -> list[RankWriteResult] | None:
    """Coordinator: DCP's ``.metadata`` from every rank's write results, added to its files."""
    if results is None:
        return None
    if save.metadata is None:
        raise CommitError("the coordinator has no global DCP metadata for this save")
    writes = [r.write_results if isinstance(r, _AsyncRankResult) else [] for r in results]
    # Not fsync'ed here: the commit fsyncs every staged file before the rename makes it visible.
    writer = ChecksumFileSystemWriter(save.staging)
    writer.finish(save.metadata, writes)
    own = results[COORDINATOR]
    files = {**own.files, layout.DCP_METADATA: writer.entries[layout.DCP_METADATA]}
    return [RankWriteResult(rank=own.rank, files=files), *results[1:]]


def _abort(staging: Path, io: DurableIO, group: dist.ProcessGroup | None) -> None:
    """Coordinator removes the staging dir; every rank returns only once it is gone."""
    if cdist.get_rank(group) == COORDINATOR:
        try:
            abort_staging_dir(staging, io)
        except (OSError, ValueError) as exc:
            # Tolerated: the save already failed; start-up GC removes the staging dir later.
            log.warning("could not remove staging dir %s: %s", staging, exc)
    cdist.barrier(group)
