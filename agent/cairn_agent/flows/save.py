"""``save_checkpoint`` as a short list of steps (sync commit, or scheduled on the async queue).

Ordering constraints, and why they hold:

- Dataloader state is written before the model checkpoint is committed, so a published
  tracker never points at an iteration whose dataloader state is missing.
- ``train_state.pt`` and ``run_config.yaml`` travel inside the commit (staging dir), and
  ``latest_train_state.pt`` is published by the engine just before the tracker: a crash at any
  point leaves either the old or the new checkpoint fully advertised, never a half of one.
- Retention runs only after the tracker is durable (sync: after ``save_sync`` returned on all
  ranks; async: as the queue's ``on_commit``), through the storage planner, which never
  deletes the tracker's target, the resume point, or anything newer than this save.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cairn_agent.cluster import reporting
from cairn_agent.config import CheckpointConfig
from cairn_agent.engine import dist
from cairn_agent.engine.save import SaveTarget, save_sync
from cairn_agent.errors import CairnError
from cairn_agent.resource.status import SavePhase
from cairn_agent.state.compose import parallel_layout, save_state_dict
from cairn_agent.state.dataloader import dataloader_save_dir, maybe_save_dataloader_state
from cairn_agent.state.run import run_of
from cairn_agent.state.run_config import run_config_bytes, view
from cairn_agent.state.train import GlobalState, train_state_file_dict
from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_on_disk
from cairn_agent.storage.tracker import read_tracker

if TYPE_CHECKING:
    from cairn_agent.async_save import AsyncRequest

logger = logging.getLogger(__name__)

NON_PERSISTENT_DEFAULT_KEEP = 2


@dataclass(frozen=True)
class SaveDestination:
    """Where one save goes and how many checkpoints that root keeps (None = all)."""

    root: Path
    non_persistent: bool
    keep_last: int | None


def destination(ckpt: CheckpointConfig, non_persistent_ckpt: bool) -> SaveDestination:
    """The root a (non-)persistent global save writes to, with its retention count."""
    if ckpt.save is None:
        raise ValueError(
            "save_checkpoint called but checkpoint.save is None; set it to a directory"
        )
    k = ckpt.most_recent_k
    if not non_persistent_ckpt:
        return SaveDestination(Path(ckpt.save), False, None if k < 0 else k)
    if ckpt.non_persistent_ckpt_type != "global":
        raise ValueError(
            f"non-persistent save with non_persistent_ckpt_type={ckpt.non_persistent_ckpt_type!r}: "
            "set it to 'global' (node-local saves go through nvidia-resiliency-ext)"
        )
    root = layout.non_persistent_dir(ckpt.save, ckpt.non_persistent_global_ckpt_dir)
    return SaveDestination(root, True, NON_PERSISTENT_DEFAULT_KEEP if k < 0 else max(1, k))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_target(state: GlobalState, dest: SaveDestination, num_flops: float) -> SaveTarget:
    """The engine's commit target, with train state and run config as rank-0 files."""
    train_bytes = _torch_bytes(train_state_file_dict(state.train_state, num_flops))
    iter_files = {layout.TRAIN_STATE_FILENAME: train_bytes}
    config_bytes = run_config_bytes(state.cfg)
    if config_bytes is not None:
        iter_files[layout.RUN_CONFIG_FILENAME] = config_bytes
    return SaveTarget(
        root=dest.root,
        iteration=state.train_state.step,
        generation=run_of(state).generation,
        layout=parallel_layout(view(state.cfg), dist.get_world_size()),
        iter_files=iter_files,
        root_files={layout.LATEST_TRAIN_STATE_FILENAME: train_bytes},
        on_phase=None if dest.non_persistent else _phase_reporter(state),
    )


def _phase_reporter(state: GlobalState) -> Callable[[SavePhase], None]:
    is_async = bool(state.cfg.checkpoint.async_save)
    iteration = state.train_state.step

    def report(phase: SavePhase) -> None:
        reporting.save_phase(state, iteration, phase, is_async=is_async)

    return report


def _retention_policy(state: GlobalState, dest: SaveDestination) -> tuple[RetentionPolicy, bool]:
    """``(policy, dry_run)`` of ``dest``: the Checkpoint's spec once applied, else the script's."""
    spec = run_of(state).retention
    if spec is None or dest.non_persistent:
        return RetentionPolicy(keep_last=dest.keep_last), False
    policy = RetentionPolicy(
        keep_last=spec.keep_last, keep_every=spec.keep_every, pinned=frozenset(spec.pinned)
    )
    return policy, spec.dry_run


def apply_keep_last(state: GlobalState, dest: SaveDestination, iteration: int) -> list[int]:
    """Rank 0: delete what retention does not keep in ``dest.root``, safely; the deleted ones."""
    policy, dry_run = _retention_policy(state, dest)
    if dist.get_rank() != 0 or (policy.keep_last is None and not policy.pinned):
        return []
    # ``iteration`` was just committed and verified by this save: no need to re-verify it.
    disk = plan_on_disk(
        dest.root,
        policy,
        protected=(iteration,),
        resume_point=run_of(state).resumed_iteration,
        known_verified=iteration,
        max_iteration=iteration,
    )
    if disk.plan.delete:
        logger.info(
            "rank 0: retention after iteration %d in %s %s %s",
            iteration,
            dest.root,
            "would delete (dry run)" if dry_run else "deletes",
            list(disk.plan.delete),
        )
    if dry_run:
        return []
    return apply_retention(dest.root, disk.plan, generation=run_of(state).generation)


def retain_now(state: GlobalState) -> list[int]:
    """Rank 0: apply retention to the persistent root now (after a retention policy change).

    Runs over committed iterations up to the tracker's target only, so a save still in flight
    (newer than the tracker) is never touched. Never raises: retention failures cost disk space.
    """
    ckpt = state.cfg.checkpoint
    if dist.get_rank() != 0 or ckpt.save is None:
        return []
    tracker = read_tracker(Path(ckpt.save)) if Path(ckpt.save).is_dir() else None
    if tracker is None or tracker.release:
        return []
    try:
        return apply_keep_last(state, destination(ckpt, False), tracker.iteration)
    except (CairnError, OSError) as exc:
        logger.error("rank 0: retention after a policy change failed: %s", exc)
        return []


def retention_callback(
    state: GlobalState, dest: SaveDestination, iteration: int
) -> Callable[[], None]:
    """Report and retention, to run once the tracker of ``iteration`` is durable (never raises)."""

    def run() -> None:
        if not dest.non_persistent:
            reporting.saved(state, layout.iteration_dir(dest.root, iteration), iteration)
            reporting.save_phase(state, None, None, is_async=state.cfg.checkpoint.async_save)
        try:
            reporting.deleted(state, apply_keep_last(state, dest, iteration))
        except (CairnError, OSError) as exc:
            # Tolerated: the new checkpoint is committed and published; an old one surviving
            # one more round costs only disk space, whereas raising would stop training.
            logger.error(
                "rank %d: retention after iteration %d failed: %s", dist.get_rank(), iteration, exc
            )

    return run


def collect_leftovers_once(state: GlobalState, root: Path) -> None:
    """Rank 0, before the first save into ``root`` by this process: remove staging leftovers.

    Safe here: no save of this process into ``root`` has started yet, and a stale writer of an
    older restart generation could not have published its staging dir anyway (fence).
    """
    done = run_of(state).gc_done_roots
    if dist.get_rank() != 0 or root in done:
        return
    done.add(root)
    try:
        removed = collect_leftovers(root)
    except OSError as exc:
        # Tolerated: leftovers only cost disk space; the next start-up GC retries.
        logger.warning("rank 0: start-up GC of %s failed: %s", root, exc)
        return
    if removed:
        logger.info(
            "rank 0: removed %d leftovers of interrupted saves under %s", len(removed), root
        )


def save(
    state: GlobalState,
    model: list[Any],
    optimizer: Any,
    opt_param_scheduler: Any,
    num_flops: float,
    *,
    non_persistent_ckpt: bool,
    train_data_iterator: Any,
) -> AsyncRequest | None:
    """One global save: dataloader state, state dict, then commit (sync) or an async request.

    Async: returns the request for the caller to schedule on its queue (nothing is written
    yet); sync: commits, applies retention and returns None.
    """
    ckpt = state.cfg.checkpoint
    dest = destination(ckpt, non_persistent_ckpt)
    iteration = state.train_state.step
    collect_leftovers_once(state, dest.root)
    maybe_save_dataloader_state(train_data_iterator, iteration, dataloader_save_dir(state.cfg))
    state_dict = save_state_dict(state, model, optimizer, opt_param_scheduler, train_data_iterator)
    target = save_target(state, dest, num_flops)
    on_commit = retention_callback(state, dest, iteration)
    writers = view(state.cfg).writers_per_rank
    if ckpt.async_save:
        from cairn_agent.async_save import AsyncRequest

        return AsyncRequest(
            sharded_state_dict=state_dict, target=target, thread_count=writers, on_commit=on_commit
        )
    final = save_sync(state_dict, target, thread_count=writers)
    on_commit()
    dist.barrier()
    logger.info("rank %d: saved iteration %d to %s", dist.get_rank(), iteration, final)
    return None
