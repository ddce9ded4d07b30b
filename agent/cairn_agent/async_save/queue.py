"""``AsyncSaveQueue``: schedule saves into a persistent worker, finalize them collectively.

Life of one save (every rank, in the training process unless noted):

1. ``schedule`` (collective, the blocking part): plan (cached while the structure holds),
   create the staging dir (coordinator), copy this rank's tensors into the reusable shared
   arena, hand the job to the rank's worker. Returns as soon as the job is handed off.
2. worker (background): writes, checksums and fsyncs this rank's files into the staging dir.
3. ``maybe_finalize`` (collective): ranks agree how many of the oldest saves every rank has
   finished; for each, the engine's commit step runs (``finalize.finalize_save``), then the
   request's ``on_commit`` (e.g. retention) runs — only after the tracker is durable.

At most one save is in flight: ``schedule`` first finalizes (blocking) a save still in flight.
So two writers never share a root, the arena is never overwritten while a worker reads it,
and a failed save is reported before the next one starts.
"""

from __future__ import annotations

import atexit
import io
import logging
import time
import weakref
from typing import Any

import torch
import torch.distributed as dist

from cairn_agent.async_save.arena import StagingArena
from cairn_agent.async_save.finalize import InFlightSave, finalize_save
from cairn_agent.async_save.plan import PlannedSave, SavePlanCache
from cairn_agent.async_save.request import AsyncRequest, QueueStats
from cairn_agent.async_save.resources import RankResources
from cairn_agent.async_save.settings import WriterSettings
from cairn_agent.async_save.slots import layout_slots
from cairn_agent.async_save.worker import Attached, Done, Failed, WorkerDiedError
from cairn_agent.async_save.writer import WriteJob
from cairn_agent.engine import dist as cdist
from cairn_agent.engine.save import SaveTarget, prepare_staging
from cairn_agent.errors import AsyncSaveError
from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO

log = logging.getLogger(__name__)


_STALL_POLL_S = 0.05
"""How often a bounded wait for a save in flight asks the other ranks."""


class AsyncSaveQueue:
    """Async saves of one process group through one persistent worker per rank."""

    def __init__(
        self,
        *,
        persistent: bool = True,
        group: dist.ProcessGroup | None = None,
        io: DurableIO = DEFAULT_IO,
        worker_io: DurableIO | None = None,
        writer: WriterSettings | None = None,
    ) -> None:
        """``io`` is the seam for the commit (training process); ``worker_io`` (picklable) for
        the worker's file writes and fsyncs. ``writer`` sets the worker's CPU and I/O priority
        and cores so training keeps its own; ``persistent=False`` stops the worker after every
        save."""
        self._persistent = persistent
        self._group = group
        self._io = io
        self._worker_io = worker_io if worker_io is not None else DurableIO()
        self._planner = SavePlanCache(group)
        self._res = RankResources(writer or WriterSettings())
        self._inflight: list[InFlightSave] = []
        self._next_job = 0
        self._closed = False
        self.stall_limit_s: float | None = None
        """A save in flight longer than this is aborted rather than waited for (None: wait)."""
        weakref.finalize(self, self._res.release)
        atexit.register(_close_at_exit, weakref.ref(self))

    # --- public API -----------------------------------------------------------------------

    def start_worker(self, *, wait: bool = False, timeout: float = 120.0) -> None:
        """Start the worker now (it starts lazily on the first ``schedule`` otherwise).

        Call it at start-up (first load): the worker then imports in the background and the
        first save starts no process. ``wait`` returns only once it is ready (or ``timeout``).
        """
        self._check_open()
        worker = self._res.ensure_worker()
        if wait and not worker.wait_ready(timeout):
            log.warning("async save worker %s not ready after %.0f s", worker.pid, timeout)

    def prepare(self, sharded_state_dict: dict[str, Any]) -> None:
        """COLLECTIVE: plan a save of this structure and map its staging buffer, saving nothing.

        What the first ``schedule`` of the same structure would do before its copy; done ahead
        (e.g. at the first load) it leaves that save only the copy and the hand-off.
        """
        self._check_open()
        arena = self._arena_for(self._planner.plan(sharded_state_dict))
        self._res.attach(self._res.ensure_worker(), arena)

    def schedule(self, request: AsyncRequest) -> None:
        """COLLECTIVE: stage ``request`` and hand it to the worker; returns without writing.

        A save still in flight is finalized first (may raise ``AsyncSaveError``); one stalled
        past ``stall_limit_s`` is aborted on every rank instead of waited for (see
        :meth:`_finish_in_flight`).
        """
        self._check_open()
        if self._inflight:
            self._finish_in_flight()
        started_at = time.time()
        planned = self._planner.plan(request.sharded_state_dict)
        staging = prepare_staging(request.target, io=self._io, group=self._group)
        entry = InFlightSave(
            job_id=self._next_job,
            request=request,
            staging=staging,
            metadata=planned.metadata,
            started_at=started_at,
        )
        self._next_job += 1
        self._inflight.append(entry)
        try:
            self._hand_off(entry, planned)
        except Exception as exc:  # every rank learns of it at finalize
            log.exception(
                "iteration %d: async save could not be handed off", request.target.iteration
            )
            entry.error = f"{type(exc).__name__}: {exc}"
        log.info(
            "iteration %d: async save scheduled on rank %d (staging %s)",
            request.target.iteration,
            cdist.get_rank(self._group),
            staging.name,
        )

    def maybe_finalize(self, blocking: bool = False) -> list[int]:
        """COLLECTIVE: commit every save all ranks finished; returns the committed iterations.

        With ``blocking``, waits for every save in flight. Raises ``AsyncSaveError`` on every
        rank if a save failed on any rank; that save is then discarded, nothing of it visible.
        """
        # In-flight counts are equal on every rank (schedule and finalize are collective), so
        # every rank skips the collective together when nothing is in flight.
        if not self._inflight:
            return []
        self._collect_replies(blocking)
        finished_here = next(
            (i for i, e in enumerate(self._inflight) if not e.done), len(self._inflight)
        )
        ready = -cdist.all_reduce_max_int(-finished_here, self._group)
        committed: list[int] = []
        for _ in range(ready):
            entry = self._inflight.pop(0)
            finalize_save(entry, io=self._io, group=self._group)
            committed.append(entry.request.target.iteration)
            self._run_on_commit(entry.request)
        if not self._persistent and not self._inflight:
            self._res.stop_worker()
        return committed

    def writes_in_progress(self) -> int:
        """Saves this rank's worker is still writing (local, non-blocking; not a collective)."""
        if self._inflight:
            self._collect_replies(blocking=False)
        return sum(1 for entry in self._inflight if not entry.done)

    def _finish_in_flight(self) -> None:
        """COLLECTIVE: wait for the saves in flight, bounded by ``stall_limit_s``.

        Without a bound a frozen worker would hang training here for good (the stall check at
        step boundaries never runs while this waits). Every rank polls, and one all-reduce per
        poll agrees whether all are done or one is stalled; a stalled save is aborted on every
        rank (nothing of it visible, the tracker unchanged) and training goes on.
        """
        limit = self.stall_limit_s
        while limit is not None:
            stalled = self.oldest_in_flight_s() > limit
            pending = any(not entry.done for entry in self._inflight)
            agreed = cdist.all_reduce_max_ints([int(pending), int(stalled)], self._group)
            if not agreed[0]:
                break
            if agreed[1]:
                self.abort_in_flight(f"save stalled: in flight longer than {limit:g} s")
                try:
                    self.maybe_finalize(blocking=True)
                except AsyncSaveError as exc:
                    # Tolerated on purpose: the stalled save is gone, nothing of it visible;
                    # the save being scheduled now gets a fresh worker.
                    log.error(
                        "rank %d: aborted a stalled async save: %s",
                        cdist.get_rank(self._group),
                        exc,
                    )
                return
            time.sleep(_STALL_POLL_S)
        self.maybe_finalize(blocking=True)

    def oldest_in_flight_s(self, now: float | None = None) -> float:
        """Seconds since the oldest save this rank's worker has not finished was scheduled (0:
        none). Local and non-blocking: a save already written but not finalized yet (training
        was busy between two finalizes) is not stalled and does not count."""
        if self._inflight:
            self._collect_replies(blocking=False)
        unfinished = [entry for entry in self._inflight if not entry.done]
        worker = self._res.worker
        if not unfinished or (worker is not None and not worker.ready):
            return 0.0  # a worker still starting up (importing torch) is not stalled yet
        return max(0.0, (time.time() if now is None else now) - unfinished[0].started_at)

    def abort_in_flight(self, reason: str) -> None:
        """Kill this rank's worker and fail every save in flight with ``reason``.

        Call it on every rank at the same point (the ranks agreed the save is stalled), then
        ``maybe_finalize``: it raises ``AsyncSaveError`` everywhere, removes the staging dirs
        and leaves the tracker alone; the next ``schedule`` starts a fresh worker.
        """
        for entry in self._inflight:
            entry.error = entry.error or reason
        self._res.kill_worker(reason, cdist.get_rank(self._group))
        if not self._closed:
            self._res.ensure_worker()  # start its successor now: the next save finds it ready

    def num_unfinalized(self) -> int:
        """Saves scheduled on this rank and not finalized yet."""
        return len(self._inflight)

    def is_empty(self) -> bool:
        """COLLECTIVE: True when no rank has a save in flight (same answer on every rank)."""
        return cdist.all_reduce_max_int(len(self._inflight), self._group) == 0

    def close(self) -> None:
        """COLLECTIVE when saves are in flight: finalize them (blocking), then stop the worker.

        Also runs at interpreter exit and on garbage collection, but there without committing
        (see ``_close_at_exit``): only an explicit ``close``/``maybe_finalize`` commits.
        """
        if self._closed:
            return
        try:
            self.maybe_finalize(blocking=True)
        finally:
            self._closed = True
            self._res.release()

    def stats(self) -> QueueStats:
        arena = self._res.arena
        worker = self._res.worker
        return QueueStats(
            worker_pid=worker.pid if worker is not None and worker.is_alive() else None,
            workers_started=self._res.counts.workers,
            arenas_created=self._res.counts.arenas,
            saves_staged=arena.stage_count if arena is not None else 0,
            arena_data_ptr=arena.data_ptr() if arena is not None else 0,
            worker_arena_data_ptr=self._res.counts.worker_ptr,
            worker_attaches=self._res.counts.attaches,
            replans=self._planner.replans,
        )

    # --- steps ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this AsyncSaveQueue is closed; create a new one to save again")

    def _arena_for(self, planned: PlannedSave) -> StagingArena:
        return self._res.arena_for(layout_slots(planned.plan), cdist.get_rank(self._group))

    def _hand_off(self, entry: InFlightSave, planned: PlannedSave) -> None:
        worker = self._res.ensure_worker()
        arena = self._arena_for(planned)
        arena.stage(planned.tensors)
        arena_id = self._res.attach(worker, arena)
        target = entry.request.target
        worker.send(
            WriteJob(
                job_id=entry.job_id,
                iteration=target.iteration,
                staging=entry.staging,
                plan=planned.plan,
                arena_id=arena_id,
                byte_items=planned.byte_items,
                extra_files=self._coordinator_files(planned, target),
                thread_count=entry.request.thread_count,
                io=self._worker_io,
            )
        )

    def _coordinator_files(self, planned: PlannedSave, target: SaveTarget) -> dict[str, bytes]:
        if cdist.get_rank(self._group) != 0:
            return {}
        buffer = io.BytesIO()
        torch.save(planned.common, buffer)
        return {layout.COMMON_PT: buffer.getvalue(), **target.iter_files}

    def _collect_replies(self, blocking: bool) -> None:
        """Pull the worker's replies; with ``blocking`` until every save in flight is done."""
        worker = self._res.worker
        if worker is None:
            for entry in self._inflight:
                entry.error = entry.error or "no async save worker was running for this save"
        while worker is not None and not all(e.done for e in self._inflight):
            try:
                reply = worker.receive(None if blocking else 0.0)
            except WorkerDiedError as exc:
                log.error("rank %d: %s", cdist.get_rank(self._group), exc)
                for entry in self._inflight:
                    entry.error = entry.error or str(exc)
                self._res.stop_worker()
                return
            if reply is None:
                return
            self._handle(reply)

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, Attached):
            self._res.attached(reply.data_ptr)
            return
        for entry in self._inflight:
            if isinstance(reply, Done) and reply.job_id == entry.job_id:
                entry.outcome = reply.outcome
            elif isinstance(reply, Failed) and reply.job_id == entry.job_id:
                entry.error = reply.error

    def _run_on_commit(self, request: AsyncRequest) -> None:
        if request.on_commit is None:
            return
        try:
            request.on_commit()
        except Exception:
            # Tolerated: the save is committed and published; what on_commit does (retention)
            # is retried after the next save.
            log.exception("iteration %d: on_commit failed", request.target.iteration)


def _close_at_exit(ref: weakref.ReferenceType[AsyncSaveQueue]) -> None:
    """Interpreter exit without ``close()``: stop the worker, commit nothing.

    Committing needs every rank, and at exit some ranks may already be gone: a collective here
    could hang the exit forever. So saves still in flight stay uncommitted (invisible; start-up
    GC removes them) and the worker is stopped once its current write is done.
    """
    queue = ref()
    if queue is None or queue._closed:
        return
    if queue._inflight:
        log.warning(
            "exiting with %d async save(s) not finalized (iterations %s); they stay uncommitted. "
            "Call maybe_finalize(blocking=True) or close() on every rank before exiting.",
            len(queue._inflight),
            [e.request.target.iteration for e in queue._inflight],
        )
        queue._inflight.clear()
    queue._closed = True
    queue._res.release()
