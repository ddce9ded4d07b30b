"""Non-persistent checkpoints: which iteration they hold, loading them, and their retention.

Global non-persistent checkpoints live in their own root (``<save>/non_persistent`` or the
configured dir) with the persistent layout and their own trackers; local ones are nvrx's
node-local files (see ``cairn_agent.local.nvrx``). Retention of a global non-persistent root
goes through the shared planner and its rename-then-remove deletion, so it never deletes the
tracker's target, anything uncommitted, or anything newer than the tracker (a save in flight).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from cairn_agent.config import CheckpointConfig
from cairn_agent.engine import dist
from cairn_agent.engine.collectives import on_coordinator
from cairn_agent.engine.topology import topology
from cairn_agent.errors import TrackerCorruptError
from cairn_agent.flows.common import CheckpointType
from cairn_agent.local import nvrx as local_ckpt
from cairn_agent.local.nvrx import init_checkpointing_context
from cairn_agent.state.run import generation_from_env
from cairn_agent.storage import layout
from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_on_disk
from cairn_agent.storage.tracker import read_tracker

__all__ = [
    "CleanupThread",
    "_get_non_persistent_iteration",
    "cleanup_old_non_persistent_checkpoint",
    "init_checkpointing_context",
]

log = logging.getLogger(__name__)


class CleanupThread(threading.Thread):
    """Background retention pass whose failure is re-raised by ``join()`` in the caller."""

    def __init__(self, target: Callable[[], object], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever joins
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if not self.is_alive() and self.error is not None:
            raise self.error


# --- which iteration a non-persistent root holds ----------------------------------------------


def _read_train_state_step(path: Path) -> int | None:
    """``step`` of a ``latest_train_state.pt``; None if absent, ``TrackerCorruptError`` if bad."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["step"])
    except Exception as exc:
        raise TrackerCorruptError(
            path,
            f"cannot be read as a train state ({exc!r}); delete it to fall back to "
            f"{layout.TRACKER_FILENAME}",
        ) from exc


def _published_iteration(root: Path) -> int | None:
    """The iteration the trackers of ``root`` publish (Bridge's file first), or None."""
    step = _read_train_state_step(layout.latest_train_state_path(root))
    if step is not None:
        return step
    tracker = read_tracker(layout.tracker_path(root))
    if tracker is None:
        return None
    if tracker.release:
        log.warning("%s points at 'release'; a non-persistent root has none", root)
        return None
    return tracker.iteration


def _read_global_iteration(root: Path) -> int:
    """The published iteration of ``root`` or -1; ``TrackerCorruptError`` when unreadable."""
    where = layout.latest_train_state_path(root)
    try:
        iteration = _published_iteration(root)
    except TrackerCorruptError as exc:
        raise TrackerCorruptError(where, exc.check) from exc
    except OSError as exc:
        raise TrackerCorruptError(where, f"cannot be read ({exc})") from exc
    if iteration is None:
        log.warning("no non-persistent tracker under %s; no non-persistent checkpoint", root)
        return -1
    return iteration


def _global_iteration(non_persistent_global_dir: str) -> int:
    # One reader, so every rank agrees even when a shared filesystem serves stale reads.
    return on_coordinator(lambda: _read_global_iteration(Path(non_persistent_global_dir)))


def _get_non_persistent_iteration(
    non_persistent_global_dir: str,
    non_persistent_ckpt_type: Literal["global", "local"] | None = None,
    checkpointing_context: dict[str, Any] | None = None,
) -> int:
    """The iteration of the newest non-persistent checkpoint, or -1 when there is none.

    ``None`` type: -1. ``"global"``: the step in ``latest_train_state.pt`` (else the
    ``.txt`` tracker) of ``non_persistent_global_dir``, read by rank 0 and broadcast.
    ``"local"``: nvrx's ``find_latest()``. Collective for both types.
    """
    if non_persistent_ckpt_type is None:
        return -1
    if non_persistent_ckpt_type == "global":
        return _global_iteration(non_persistent_global_dir)
    if non_persistent_ckpt_type == "local":
        return local_ckpt.find_latest_local_iteration(checkpointing_context)
    raise ValueError(
        f"non_persistent_ckpt_type={non_persistent_ckpt_type!r} is not supported; use "
        "'global' or 'local'"
    )


# --- loading --------------------------------------------------------------------------------


def load_local_base(
    ckpt_cfg: CheckpointConfig,
    rank0: bool,
    sharded_state_dict: dict[str, Any] | None,
    non_persistent_iteration: int,
    checkpointing_context: dict[str, Any] | None,
) -> tuple[dict[str, Any], Any, bool, CheckpointType]:
    if rank0:
        # The first (metadata) pass needs nothing from a local checkpoint: everything it
        # decides from is the running config, so the expensive load waits for the real pass.
        return {}, non_persistent_iteration, False, CheckpointType.LOCAL
    state_dict, ckpt_id = local_ckpt.load_local_state_dict(
        checkpointing_context,
        sharded_state_dict,
        algo=ckpt_cfg.non_persistent_local_ckpt_algo,
        parallelization_group=topology().dp_cp_group,
    )
    return state_dict, ckpt_id, False, CheckpointType.LOCAL


# --- retention --------------------------------------------------------------------------------


def _cleanup_pass(
    root: Path, leave_ckpt_num: int, max_iteration: int | None, generation: int
) -> list[int]:
    # Bridge's ``latest_train_state.pt`` may publish the root without Cairn's tracker file.
    published = _published_iteration(root)
    limits = [it for it in (published, max_iteration) if it is not None]
    disk = plan_on_disk(
        root,
        RetentionPolicy(keep_last=max(1, leave_ckpt_num)),
        protected=() if published is None else (published,),
        max_iteration=min(limits) if limits else None,
    )
    for iteration in disk.plan.keep:
        log.info(
            "rank 0: non-persistent retention under %s keeps iteration %d (%s)",
            root,
            iteration,
            disk.plan.explain(iteration),
        )
    if not disk.plan.delete:
        return []
    return apply_retention(root, disk.plan, generation=generation)


def cleanup_old_non_persistent_checkpoint(
    save_dir: str,
    leave_ckpt_num: int = 1,
    do_async: bool = False,
    *,
    max_iteration: int | None = None,
    generation: int | None = None,
) -> CleanupThread | None:
    """Delete all but the newest ``leave_ckpt_num`` committed ``iter_*`` dirs of ``save_dir``.

    Runs on global rank 0 only (other ranks return None at once). Never deletes the
    iteration the root's tracker points at, uncommitted (staging) dirs, or anything newer than
    the tracker or ``max_iteration`` (saves that may be in flight); the newest committed one is
    always kept, so ``leave_ckpt_num=0`` keeps one. ``generation`` (default: this pod's restart
    generation) fences deletion against a newer restart. With ``do_async`` the pass runs in a
    ``CleanupThread``, returned so the caller can ``join()`` it (which re-raises its failure).
    """
    if leave_ckpt_num < 0:
        raise ValueError(f"leave_ckpt_num must be >= 0, got {leave_ckpt_num}")
    if dist.get_rank() != 0:
        return None
    root = Path(save_dir)
    fence = generation_from_env() if generation is None else generation

    def work() -> list[int]:
        return _cleanup_pass(root, leave_ckpt_num, max_iteration, fence)

    if not do_async:
        work()
        return None
    thread = CleanupThread(work, name=f"cairn-np-cleanup-{root.name}")
    thread.start()
    return thread
