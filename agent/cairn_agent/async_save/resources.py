"""One rank's async-save resources: its persistent worker process and its staging arena.

Both outlive single saves: the worker is started once (and again only when it died or was
killed), the arena is reused while the plan's tensor layout holds, and the worker maps each
arena once. Kept apart from the queue so the queue is only about the life of a save, and so
garbage collection and interpreter exit can release both without the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cairn_agent.async_save.arena import StagingArena
from cairn_agent.async_save.settings import WriterSettings
from cairn_agent.async_save.slots import TensorSlot
from cairn_agent.async_save.worker import Attach, WorkerHandle

log = logging.getLogger(__name__)


@dataclass
class ResourceCounts:
    """What was started, allocated and mapped so far (the queue's ``stats``)."""

    workers: int = 0
    arenas: int = 0
    attaches: int = 0
    worker_ptr: int = 0
    """The arena's address in the worker, as its last ``Attached`` reply said."""


class RankResources:
    """The worker and arena of one rank, created on demand and reused across saves."""

    def __init__(self, writer: WriterSettings) -> None:
        self._writer = writer
        self.worker: WorkerHandle | None = None
        self.arena: StagingArena | None = None
        self.counts = ResourceCounts()
        self._worker_arena: int | None = None  # id of the arena the current worker mapped

    def ensure_worker(self) -> WorkerHandle:
        """The running worker, started (again) if there is none or it died."""
        worker = self.worker
        if worker is not None and worker.is_alive():
            return worker
        if worker is not None:
            log.warning("async save worker %s is gone; starting a fresh one", worker.pid)
            worker.stop()
        self.worker = WorkerHandle(self._writer)
        self._worker_arena = None
        self.counts.workers += 1
        return self.worker

    def stop_worker(self) -> None:
        """Stop the worker once its current write is done (none may be in flight)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()

    def kill_worker(self, reason: str, rank: int) -> None:
        """Kill the worker now, whatever it is writing (a stalled save is being aborted)."""
        worker, self.worker = self.worker, None
        self._worker_arena = None
        if worker is not None:
            log.error("rank %d: killing async save worker %s: %s", rank, worker.pid, reason)
            worker.kill()

    def arena_for(self, slots: list[TensorSlot], rank: int) -> StagingArena:
        """The arena for ``slots``: the current one if its layout matches, else a new one."""
        arena = self.arena
        if arena is not None and arena.matches(slots):
            return arena
        if arena is not None:
            arena.close()
        self.arena = arena = StagingArena(slots)
        self.counts.arenas += 1
        log.info("rank %d: staging arena of %d bytes allocated", rank, arena.size)
        return arena

    def attach(self, worker: WorkerHandle, arena: StagingArena) -> int:
        """Have ``worker`` map ``arena`` unless it already has; the arena's id."""
        arena_id = self.counts.arenas
        if self._worker_arena != arena_id:
            worker.send_arena(Attach(arena_id, arena.slots), arena.fd)
            self._worker_arena = arena_id
        return arena_id

    def attached(self, data_ptr: int) -> None:
        """The worker reported that it mapped the arena, at ``data_ptr``."""
        self.counts.attaches += 1
        self.counts.worker_ptr = data_ptr

    def release(self) -> None:
        """Stop the worker and unmap the arena (GC, exit, close)."""
        self.stop_worker()
        arena, self.arena = self.arena, None
        if arena is not None:
            arena.close()
