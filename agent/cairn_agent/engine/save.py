"""Synchronous save: the commit protocol of DESIGN.md §3 carried out across ranks.

:func:`save_sync` is a short list of collective steps, each usable on its own (the async
engine runs the write in its worker and the last two steps at finalize):

1. :func:`prepare_staging` — the coordinator claims the restart generation and creates the
   hidden staging directory; every rank learns its path.
2. :func:`write_rank_files` — every rank writes its DCP shards (rank 0 also ``.metadata``,
   ``common.pt`` and the extra iteration files) and describes what it wrote. Rank-local.
3. :func:`agree_and_gather` — all ranks agree that every rank succeeded; the coordinator
   receives every rank's file descriptions. On any failure the staging dir is removed.
4. :func:`commit_step` — the coordinator writes the manifest and ``metadata.json`` last, renames
   the directory into place, then publishes root files and the tracker; every rank learns the
   outcome.

Whatever fails, every rank raises ``CommitError`` and the tracker and every previously committed
checkpoint stay untouched. The coordinator is rank 0 of ``group``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from cairn_agent.engine.collectives import COORDINATOR, all_agree, describe_error, on_coordinator
from cairn_agent.engine.dist import broadcast_object, gather_object, get_rank, get_world_size
from cairn_agent.engine.sharded import RankWriteResult, write_sharded
from cairn_agent.errors import CommitError, StaleGenerationError
from cairn_agent.resource.status import SavePhase
from cairn_agent.storage import layout
from cairn_agent.storage.commit import (
    abort_staging_dir,
    commit_staging_dir,
    create_staging_dir,
    publish,
)
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO
from cairn_agent.storage.generation import claim_generation
from cairn_agent.storage.manifest import FileEntry, Manifest, describe_bytes

log = logging.getLogger(__name__)

_RESERVED_ITER_FILES = frozenset(
    {layout.METADATA_JSON, layout.MANIFEST_FILENAME, layout.COMMON_PT, layout.DCP_METADATA}
)
_RESERVED_ROOT_FILES = frozenset({layout.TRACKER_FILENAME})


@dataclass(frozen=True, kw_only=True)
class SaveTarget:
    """Where and as what one save is committed."""

    root: Path
    """Checkpoint root (``CheckpointConfig.save``); the iteration dir is created under it."""
    iteration: int
    """Training iteration saved; names the directory ``iter_%07d``."""
    release: bool = False
    """Save as the ``release`` directory instead of ``iter_%07d``."""
    generation: int = 0
    """Restart generation of this job; an older generation may never publish."""
    layout: Mapping[str, int] = field(default_factory=dict)
    """Parallel layout recorded in the manifest, e.g. ``{"tp": 2, "pp": 1, "dp": 4}``."""
    iter_files: Mapping[str, bytes] = field(default_factory=dict)
    """Extra files rank 0 puts into the iteration dir (``train_state.pt``, ``run_config.yaml``)."""
    root_files: Mapping[str, bytes] = field(default_factory=dict)
    """Files rank 0 publishes at the root just before the tracker (``latest_train_state.pt``)."""
    publish_tracker: bool = True
    """Move the tracker (and write ``root_files``) after the commit; False only commits."""
    on_phase: Callable[[SavePhase], None] | None = field(default=None, compare=False, repr=False)
    """Told each phase as this rank enters it (status reporting); must not raise."""

    def phase(self, phase: SavePhase) -> None:
        """Tell ``on_phase`` that the save entered ``phase``."""
        if self.on_phase is not None:
            self.on_phase(phase)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        if self.generation < 0:
            raise ValueError(f"generation must be >= 0, got {self.generation}")
        for name in self.iter_files:
            _check_file_name(name, _RESERVED_ITER_FILES, "iter_files")
            if name.endswith(layout.DISTCP_SUFFIX):
                raise ValueError(f"iter_files: {name!r} collides with DCP shard names; rename it")
        for name in self.root_files:
            _check_file_name(name, _RESERVED_ROOT_FILES, "root_files")

    @property
    def final_dir(self) -> Path:
        """The directory this save becomes when committed."""
        return layout.iteration_dir(self.root, self.iteration, self.release)


def _check_file_name(name: str, reserved: frozenset[str], what: str) -> None:
    if not name or "/" in name or name.startswith(".") or name in {".", ".."}:
        raise ValueError(f"{what}: {name!r} must be a plain, visible file name (no '/')")
    if name in reserved:
        raise ValueError(f"{what}: {name!r} is written by Cairn itself; choose another name")


def save_sync(
    sharded_state_dict: dict[str, Any],
    target: SaveTarget,
    *,
    thread_count: int = 1,
    io: DurableIO = DEFAULT_IO,
    group: dist.ProcessGroup | None = None,
) -> Path:
    """Save ``sharded_state_dict`` as a committed (and, by default, published) checkpoint.

    Collective over ``group``; returns the committed iteration directory on every rank.
    Raises ``CommitError`` on every rank if any rank failed; nothing of the save is then
    visible, and the tracker and earlier checkpoints are untouched.
    """
    started_at = time.time()
    staging = prepare_staging(target, io=io, group=group)
    outcome: RankWriteResult | Exception
    try:
        outcome = write_rank_files(
            sharded_state_dict, staging, target, thread_count=thread_count, io=io, group=group
        )
    except Exception as exc:  # noqa: BLE001 - every rank learns of it in agree_and_gather
        outcome = exc
    target.phase("Finalizing")
    results = agree_and_gather(staging, outcome, iteration=target.iteration, io=io, group=group)
    return commit_step(staging, target, results, started_at=started_at, io=io, group=group)


def prepare_staging(
    target: SaveTarget, *, io: DurableIO = DEFAULT_IO, group: dist.ProcessGroup | None = None
) -> Path:
    """Coordinator: claim the generation, create the staging dir. Collective; path on all ranks."""
    target.phase("Staging")

    def claim_and_create() -> Path:
        claim_generation(target.root, target.generation, io)
        return create_staging_dir(
            target.root, target.iteration, target.generation, target.release, io
        )

    try:
        return on_coordinator(claim_and_create, group)
    except Exception as exc:
        _raise_everywhere(
            f"iteration {target.iteration}: could not prepare the save: {describe_error(exc)}",
            exc,
        )
        raise  # unreachable: _raise_everywhere always raises


def write_rank_files(
    sharded_state_dict: dict[str, Any],
    staging: Path,
    target: SaveTarget,
    *,
    thread_count: int = 1,
    io: DurableIO = DEFAULT_IO,
    group: dist.ProcessGroup | None = None,
) -> RankWriteResult:
    """This rank's files in ``staging``: DCP shards, plus the iteration files on rank 0.

    The DCP part is collective (see ``write_sharded``); the iteration files are rank-local,
    so callers must agree afterwards (:func:`agree_and_gather`).
    """
    target.phase("Writing")
    result = write_sharded(sharded_state_dict, staging, thread_count=thread_count, group=group)
    if result.rank != COORDINATOR or not target.iter_files:
        return result
    files = dict(result.files)
    for name, data in target.iter_files.items():
        io.write_file(staging / name, data)
        files[name] = describe_bytes(data)
    return RankWriteResult(rank=result.rank, files=files)


def agree_and_gather(
    staging: Path,
    outcome: RankWriteResult | BaseException,
    *,
    iteration: int,
    io: DurableIO = DEFAULT_IO,
    group: dist.ProcessGroup | None = None,
) -> list[RankWriteResult] | None:
    """Agree that every rank wrote its files; gather the descriptions to the coordinator.

    ``outcome`` is this rank's result or the exception its write raised. Returns every rank's
    result (indexed by rank) on the coordinator and None elsewhere. If any rank failed, the
    coordinator removes ``staging`` and every rank raises ``CommitError`` naming the failed
    ranks and their errors.
    """
    rank = get_rank(group)
    if all_agree(isinstance(outcome, RankWriteResult), group):
        log.info("iteration %d: rank %d wrote its files; all ranks agree", iteration, rank)
        return gather_object(outcome, COORDINATOR, group)
    mine = None if isinstance(outcome, RankWriteResult) else describe_error(outcome)
    reports = gather_object(mine, COORDINATOR, group)
    summary = None
    if rank == COORDINATOR:
        summary = _failure_summary(iteration, reports or [])
        log.error("%s; removing staging dir %s", summary, staging)
        _abort_quietly(staging, io)
    summary = broadcast_object(summary, COORDINATOR, group)
    _raise_everywhere(summary, None if isinstance(outcome, RankWriteResult) else outcome)
    return None  # unreachable: _raise_everywhere always raises


def _failure_summary(iteration: int, reports: Sequence[str | None]) -> str:
    failed = "; ".join(f"rank {r}: {text}" for r, text in enumerate(reports) if text is not None)
    return f"iteration {iteration}: save failed, nothing committed ({failed})"


def commit_step(
    staging: Path,
    target: SaveTarget,
    results: Sequence[RankWriteResult] | None,
    *,
    started_at: float,
    io: DurableIO = DEFAULT_IO,
    group: dist.ProcessGroup | None = None,
) -> Path:
    """Coordinator: manifest, ``metadata.json`` last, rename, then publish. Collective.

    ``results`` (every rank's :class:`RankWriteResult`) is needed on the coordinator only;
    ``started_at`` is the Unix time the save began (the manifest's ``created_at``). Returns the
    committed directory on every rank, or raises ``CommitError`` on every rank; a failure
    before the rename removes ``staging``.
    """
    target.phase("Committing")
    world_size = get_world_size(group)

    def commit() -> None:
        try:
            _commit_and_publish(staging, target, results, started_at, world_size, io)
        except Exception:
            _abort_quietly(staging, io)
            raise

    try:
        on_coordinator(commit, group)
    except Exception as exc:  # noqa: BLE001 - the same error on every rank, wrapped alike
        _raise_everywhere(
            f"iteration {target.iteration}: commit/publish failed: {describe_error(exc)}", exc
        )
    return target.final_dir


def _commit_and_publish(
    staging: Path,
    target: SaveTarget,
    results: Sequence[RankWriteResult] | None,
    started_at: float,
    world_size: int,
    io: DurableIO,
) -> None:
    if results is None or len(results) != world_size:
        raise CommitError(f"expected file descriptions from {world_size} ranks, got {results!r}")
    manifest = build_manifest(target, results, started_at=started_at, world_size=world_size)
    commit_staging_dir(staging, target.final_dir, manifest=manifest, io=io)
    if target.publish_tracker:
        # A failure from here on leaves a committed but unpublished directory: the tracker
        # still names the previous checkpoint, and retention treats this one as any other.
        publish(
            target.root,
            target.iteration,
            generation=target.generation,
            release=target.release,
            root_files=target.root_files,
            io=io,
        )


def build_manifest(
    target: SaveTarget, results: Sequence[RankWriteResult], *, started_at: float, world_size: int
) -> Manifest:
    """The manifest of a save from every rank's file descriptions (no file named twice)."""
    files: dict[str, FileEntry] = {}
    for result in results:
        for name, entry in result.files.items():
            if name in files:
                raise CommitError(f"iteration {target.iteration}: {name} was written by two ranks")
            files[name] = entry
    return Manifest(
        iteration=target.iteration,
        release=target.release,
        generation=target.generation,
        world_size=world_size,
        layout=dict(target.layout),
        files=files,
        created_at=started_at,
        committed_at=time.time(),
    )


def _abort_quietly(staging: Path, io: DurableIO) -> None:
    try:
        abort_staging_dir(staging, io)
    except (OSError, ValueError) as exc:
        # Tolerated: the save already failed; start-up GC removes the staging dir later.
        log.warning("could not remove staging dir %s: %s", staging, exc)


def _raise_everywhere(message: str, own_error: BaseException | None) -> None:
    """Raise ``CommitError(message)``, chained to this rank's own error where it had one.

    A ``StaleGenerationError`` is re-raised as itself on the rank that hit it, so callers can
    tell a fenced-off writer (stop saving) from a failed save (retry later).
    """
    if isinstance(own_error, StaleGenerationError):
        raise own_error
    raise CommitError(message) from own_error
