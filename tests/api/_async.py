"""Rank body: async saves through the facade; retention only after each commit."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

from tests.api._bodies import pack
from tests.api._workload import Job


def async_saves(rank: int, world: int, root: str) -> bytes:
    from cairn_agent import checkpointing

    job = Job(rank, 0, save=root, async_save=True, most_recent_k=2)
    ckpt = job.state.cfg.checkpoint
    checkpointing.init_async_checkpoint_worker(job.state)
    seen = []
    for _ in range(3):
        job.step()
        job.save()
        tracker = read_tracker(Path(root))
        seen.append(
            (committed_iterations(Path(root)), None if tracker is None else tracker.iteration)
        )
    empty_before = checkpointing.is_empty_async_queue(job.state)
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    empty_after = checkpointing.is_empty_async_queue(job.state)
    final = (committed_iterations(Path(root)), read_tracker(Path(root)))
    return pack({"seen": seen, "final": final, "empty": (empty_before, empty_after)})
