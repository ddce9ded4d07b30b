"""Rank body of the governing tests: a training loop the test steers through files.

Every rank runs :func:`governed_loop`: a small data-parallel job (``tests.api._workload.Job``)
that names a Checkpoint (``CAIRN_CHECKPOINT``), so the agent watches it and the ranks agree on
its policy at each step boundary. The loop records, per step and per rank, the interval and
modes the live ``CheckpointConfig`` held after the boundary, which saves it made, and how long
the step took; the test compares the records across ranks and against the files on disk.

The test steers the ranks with files in ``Plan.gates`` (see ``tests.governing.steering``):

- ``pause.<k>``: pause at the next step (the ranks agree on which, with one all-reduce);
  a plan may also pause at fixed steps (``Plan.pause_at``). Pauses are numbered from 0 in the
  order they happen, whatever asked for them.
- ``paused.<k>.<rank>``: written by a paused rank (JSON: its step, its async worker's pid);
- ``resume.<k>``: the test lets pause ``k`` go (JSON, optional ``see_generation``: rank 0
  first waits until its watch of the Checkpoint saw that spec generation, so an edit made
  during the pause applies at the very next boundary, deterministically);
- ``stop``: end the loop at the next step (agreed the same way);
- ``abort``: the test failed; a paused rank raises instead of waiting on;
- ``pid.<rank>``: written at start; SIGUSR1 to that pid dumps the rank's threads into
  ``stacks.<rank>`` (the test does it when the ranks do not reach a pause, to say where).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from tests.api._workload import Job

_PAUSE_DEADLINE_S = 120.0
_POLL_S = 0.02


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What one governed run does (picklable: it travels to the rank processes)."""

    root: str
    """The persistent checkpoint root (the script's ``save`` and ``load``)."""
    env: dict[str, str]
    """The pod environment: ``CAIRN_CHECKPOINT``, ``KUBECONFIG``, the status throttle."""
    gates: str
    """The directory of the steering files."""
    save_interval: int
    """The script's ``CheckpointConfig.save_interval``."""
    async_save: bool = False
    most_recent_k: int = -1
    loop: Literal["due", "bridge"] = "due"
    """``due``: the script asks ``checkpointing.save_due`` each step (its own cadence);
    ``bridge``: Megatron-Bridge's loop (``maybe_finalize_async_save`` every step, then a save
    when ``step % cfg.checkpoint.save_interval == 0``)."""
    pause_at: tuple[int, ...] = ()
    """Steps after which the ranks pause (besides the pauses the test asks for)."""
    save_until: int | None = None
    """The loop makes no saves of its own after this step (the cluster's still happen)."""
    max_steps: int = 600
    step_sleep_s: float = 0.02
    """Simulated compute per step."""
    list_root: bool = False
    """Rank 0 records the committed iterations on disk after every step."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRecord:
    """One rank's view of one step, taken after its boundary and its save."""

    step: int
    interval: int | None
    """``cfg.checkpoint.save_interval`` as the boundary of this step left it."""
    async_save: bool
    keep: int
    """``cfg.checkpoint.most_recent_k`` as the boundary of this step left it."""
    non_persistent_type: str | None
    """``cfg.checkpoint.non_persistent_ckpt_type`` as the boundary of this step left it."""
    saved: bool
    """The loop saved (persistent) at this step."""
    in_flight: bool
    """Right after the loop's save, some rank's async save was still in flight."""
    cluster_saved: bool
    """Cairn saved this step itself, answering the Checkpoint's save request."""
    started: float
    """``time.time()`` when the step began."""
    seconds: float
    """The step's wall time: compute, boundary, save."""
    boundary_at: float
    """``time.time()`` right after the step's boundary (and the finalize of async saves)."""
    saved_at: float | None
    """``time.time()`` when the loop's save began."""
    pending: int
    """Async saves this rank scheduled and has not finalized, after the step."""
    on_disk: tuple[int, ...] = ()
    """Rank 0 with ``Plan.list_root``: committed iterations after the step."""
    tracker: int | None = None
    """Rank 0 with ``Plan.list_root``: the tracker's iteration after the step."""


def governed_loop(rank: int, world: int, plan: Plan) -> list[StepRecord]:
    gates = Path(plan.gates)
    _dump_stacks_on_request(gates, rank)
    try:
        return _run(rank, plan, gates)
    except BaseException:
        # The test learns of it at once (run_ranks only reports once every rank ended, and
        # the other rank may be waiting in a pause).
        (gates / f"error.{rank}").write_text(traceback.format_exc())
        raise


def _run(rank: int, plan: Plan, gates: Path) -> list[StepRecord]:
    # Ranks start from a preloaded forkserver, whose environment predates the test's.
    os.environ.update(plan.env)
    from cairn_agent import checkpointing

    job = Job(
        rank,
        0,
        save=plan.root,
        load=plan.root,
        save_interval=plan.save_interval,
        async_save=plan.async_save,
        most_recent_k=plan.most_recent_k,
    )
    job.load()  # starts following the Checkpoint (rank 0 watches) and applies its spec
    records: list[StepRecord] = []
    pauses = 0
    for _ in range(plan.max_steps):
        started, clock = time.time(), time.monotonic()
        time.sleep(plan.step_sleep_s)
        job.step()
        record = _save_step(job, plan, started, clock)
        records.append(record)
        stop, asked = _agreed_flags(gates, pauses)
        if stop:
            break
        if asked or record.step in plan.pause_at:
            _pause(job, gates, pauses, rank)
            pauses += 1
    ckpt = job.state.cfg.checkpoint
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    _flush(job)
    return records


def _dump_stacks_on_request(gates: Path, rank: int) -> None:
    stacks = (gates / f"stacks.{rank}").open("w")  # open for the life of the process
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    faulthandler.enable(file=stacks)  # a crash of the rank says where, too
    (gates / f"pid.{rank}").write_text(str(os.getpid()))


def _save_step(job: Job, plan: Plan, started: float, clock: float) -> StepRecord:
    from cairn_agent import checkpointing

    state, ckpt = job.state, job.state.cfg.checkpoint
    step = int(state.train_state.step)
    allowed = plan.save_until is None or step <= plan.save_until
    cluster_saved = in_flight = False
    saved_at: float | None = None
    if plan.loop == "due":
        due = checkpointing.save_due(state)
        boundary_at = time.time()
        cluster_saved = due.saved
        if due.persistent and allowed:
            saved_at = time.time()
            job.save()
        checkpointing.maybe_finalize_async_save(state, ckpt)
    else:
        checkpointing.maybe_finalize_async_save(state, ckpt)
        boundary_at = time.time()
        interval = ckpt.save_interval
        if interval and step % interval == 0 and allowed:
            saved_at = time.time()
            job.save()
    if saved_at is not None:
        in_flight = not checkpointing.is_empty_async_queue(state)  # collective, every rank
    listed = plan.list_root and dist.get_rank() == 0
    return StepRecord(
        step=step,
        interval=ckpt.save_interval,
        async_save=bool(ckpt.async_save),
        keep=int(ckpt.most_recent_k),
        non_persistent_type=ckpt.non_persistent_ckpt_type,
        saved=saved_at is not None,
        in_flight=in_flight,
        cluster_saved=cluster_saved,
        started=started,
        seconds=time.monotonic() - clock,
        boundary_at=boundary_at,
        saved_at=saved_at,
        pending=_pending(job),
        on_disk=_on_disk(plan) if listed else (),
        tracker=_tracker(plan) if listed else None,
    )


def _pending(job: Job) -> int:
    queue = job.state.async_calls_queue if job.state.cfg.checkpoint.async_save else None
    return 0 if queue is None else int(queue.num_unfinalized())


def _on_disk(plan: Plan) -> tuple[int, ...]:
    from cairn_agent.storage.listing import committed_iterations

    return tuple(sorted(committed_iterations(Path(plan.root))))


def _tracker(plan: Plan) -> int | None:
    from cairn_agent.storage import layout
    from cairn_agent.storage.tracker import read_tracker

    value = read_tracker(layout.tracker_path(plan.root))
    return None if value is None else value.iteration


def _agreed_flags(gates: Path, pauses: int) -> tuple[bool, bool]:
    """(stop, pause) as every rank agrees: a file seen by one rank counts for all."""
    flags = torch.tensor(
        [int((gates / "stop").exists()), int((gates / f"pause.{pauses}").exists())]
    )
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), bool(flags[1])


def _pause(job: Job, gates: Path, index: int, rank: int) -> None:
    info = {"step": int(job.state.train_state.step), "worker_pid": _idle_worker_pid(job)}
    note = gates / f"paused.{index}.{rank}"
    tmp = gates / f"{note.name}.tmp"  # per rank: ranks write their notes at the same time
    tmp.write_text(json.dumps(info))
    tmp.rename(note)
    release = gates / f"resume.{index}"
    deadline = time.monotonic() + _PAUSE_DEADLINE_S
    while not release.exists():
        if (gates / "abort").exists():
            raise RuntimeError(f"rank {rank}: the test aborted the run at pause {index}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank}: pause {index} not released in {_PAUSE_DEADLINE_S}s")
        time.sleep(_POLL_S)
    generation = json.loads(release.read_text() or "{}").get("see_generation")
    if rank == 0 and generation is not None:
        _wait_watch_sees(job, int(generation))


def _wait_watch_sees(job: Job, generation: int) -> None:
    """Rank 0: wait until the agent's watch saw spec ``generation`` (a test-only sync point).

    Reads the control's private watch on purpose: the test needs to know the edit reached the
    job before the ranks go on, which nothing user-visible says until it is applied.
    """
    from cairn_agent.state.run import run_of

    watch = getattr(run_of(job.state).control, "_watch", None)
    if watch is None:
        raise AssertionError("rank 0 has no watch of its Checkpoint (has Control changed?)")
    deadline = time.monotonic() + _PAUSE_DEADLINE_S
    while (snap := watch.snapshot()) is None or snap.generation < generation:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0: the watch never saw spec generation {generation}")
        time.sleep(_POLL_S)


def _idle_worker_pid(job: Job) -> int | None:
    """This rank's async worker, ready and done with what it was given (None: async off).

    Waiting here keeps a fresh worker's start-up (importing torch: seconds on a busy machine)
    out of the steps the test times.
    """
    if not job.state.cfg.checkpoint.async_save:
        return None
    queue = job.state.async_calls_queue
    if queue is None:
        return None
    queue.start_worker(wait=True, timeout=_PAUSE_DEADLINE_S)
    deadline = time.monotonic() + _PAUSE_DEADLINE_S
    while queue.writes_in_progress() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    pid: int | None = queue.stats().worker_pid
    return pid


def _flush(job: Job) -> None:
    from cairn_agent.cluster import reporting

    target = reporting.reporter(job.state)
    if target is not None:  # rank 0
        if not target.flush(timeout=30):
            raise AssertionError("rank 0 could not send its last status reports within 30 s")
        target.close()
