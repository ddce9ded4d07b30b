"""Async saves on two real gloo ranks: round trip, worker reuse, failures, agreement, retention."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.async_save.helpers import FaultIO, empty_like, plain, same, state
from tests.distributed import run_ranks

WORLD = 2


def _load(rank: int, root: Path, iteration: int) -> dict[str, Any]:
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.storage import layout

    loaded = load_checkpoint_dir(empty_like(rank, WORLD), layout.iteration_dir(root, iteration))
    return plain(loaded)


def _tracker(root: Path) -> int | None:
    from cairn_agent.storage.tracker import read_tracker

    value = read_tracker(root)
    return None if value is None else value.iteration


def _staging_dirs(root: Path) -> list[str]:
    from cairn_agent.storage.listing import list_staging_dirs

    return [p.name for p in list_staging_dirs(root)]


def _wait_until(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(0.02)


# --- round trip with a reused worker and reused buffers ---------------------------------------


def _round_trips(rank: int, world: int, root_s: str) -> dict[str, Any]:
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.engine.save import SaveTarget
    from cairn_agent.storage import layout
    from cairn_agent.storage.manifest import verify_checkpoint_dir

    root = Path(root_s)
    queue = AsyncSaveQueue()
    queue.start_worker()
    out: dict[str, Any] = {"exact": [], "committed": [], "pids": [], "ptrs": [], "verified": []}
    for step in (10, 20, 30):
        sd = state(rank, world, step)
        expected = plain(sd)
        target = SaveTarget(root=root, iteration=step, layout={"dp": world})
        queue.schedule(AsyncRequest(sharded_state_dict=sd, target=target))
        # Training goes on right away: the checkpoint must hold the values at schedule time.
        sd["w"].data.add_(1000.0)
        out["committed"].append(queue.maybe_finalize(blocking=True))
        stats = queue.stats()
        out["pids"].append(stats.worker_pid)
        out["ptrs"].append((stats.arena_data_ptr, stats.worker_arena_data_ptr))
        out["exact"].append(same(_load(rank, root, step), expected))
        if rank == 0:
            verify_checkpoint_dir(layout.iteration_dir(root, step), deep=True)  # CRCs match
            out["verified"].append(step)
    out["stats"] = queue.stats()
    out["tracker"] = _tracker(root)
    out["files"] = sorted(os.listdir(layout.iteration_dir(root, 30)))
    pid = out["pids"][0]
    queue.close()
    _wait_until(lambda: not _alive(pid), 10)
    out["is_empty_after_close"] = queue.num_unfinalized() == 0
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): treat it as dead.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_three_async_saves_round_trip_bit_exact_through_one_worker_and_reused_buffers(
    tmp_path: Path,
) -> None:
    results = run_ranks(_round_trips, WORLD, str(tmp_path))
    for rank, res in enumerate(results):
        assert res["committed"] == [[10], [20], [30]]
        assert res["exact"] == [True, True, True], f"rank {rank} loaded different values"
        assert len(set(res["pids"])) == 1 and res["pids"][0] is not None
        assert len(set(res["ptrs"])) == 1, "staging buffers were reallocated between saves"
        stats = res["stats"]
        assert (stats.workers_started, stats.arenas_created, stats.worker_attaches) == (1, 1, 1)
        assert stats.saves_staged == 3 and stats.replans == 1
        assert res["tracker"] == 30
        assert res["is_empty_after_close"]
    assert results[0]["verified"] == [10, 20, 30]
    assert results[0]["files"] == sorted(
        [
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
            "common.pt",
            "metadata.json",
            "cairn.manifest.json",
        ]
    )


# --- a worker killed mid-write; a disk-full write; a fresh worker afterwards -------------------


def _failures(rank: int, world: int, root_s: str) -> dict[str, Any]:
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.engine.save import SaveTarget
    from cairn_agent.errors import AsyncSaveError
    from cairn_agent.storage import layout
    from cairn_agent.storage.gc import collect_leftovers

    root = Path(root_s)
    io = FaultIO(
        delay_s=30.0 if rank == 1 else 0.0,
        delay_match="iter_0000006" if rank == 1 else "",
        fail_match="iter_0000008" if rank == 0 else "",
    )
    queue = AsyncSaveQueue(worker_io=io)
    out: dict[str, Any] = {}

    def save(step: int) -> None:
        target = SaveTarget(root=root, iteration=step)
        queue.schedule(AsyncRequest(sharded_state_dict=state(rank, world, step), target=target))

    save(5)
    queue.maybe_finalize(blocking=True)
    save(6)
    if rank == 1:
        staging = root / _staging_dirs(root)[0]
        # Mid-write: this rank's shard file exists, its fsync is being held up by the seam.
        _wait_until(lambda: (staging / "__1_0.distcp").exists())
        os.kill(queue.stats().worker_pid or 0, signal.SIGKILL)
    try:
        queue.maybe_finalize(blocking=True)
        out["killed_error"] = None
    except AsyncSaveError as exc:
        out["killed_error"] = (exc.iteration, sorted(exc.failures))
    out["after_kill"] = (
        _tracker(root),
        _staging_dirs(root),
        layout.iteration_dir(root, 6).exists(),
    )
    out["gc_removed"] = [p.name for p in collect_leftovers(root)] if rank == 0 else []

    save(8)  # rank 0's fsyncs fail as on a full disk
    try:
        queue.maybe_finalize(blocking=True)
        out["full_error"] = None
    except AsyncSaveError as exc:
        out["full_error"] = (exc.iteration, sorted(exc.failures), "No space left" in str(exc))
    out["after_full"] = (
        _tracker(root),
        _staging_dirs(root),
        layout.iteration_dir(root, 8).exists(),
    )

    save(9)
    out["committed_9"] = queue.maybe_finalize(blocking=True)
    out["exact_9"] = same(_load(rank, root, 9), plain(state(rank, world, 9)))
    out["workers_started"] = queue.stats().workers_started
    out["tracker"] = _tracker(root)
    queue.close()
    return out


def test_killed_worker_and_full_disk_fail_on_every_rank_and_leave_nothing_visible(
    tmp_path: Path,
) -> None:
    results = run_ranks(_failures, WORLD, str(tmp_path))
    for res in results:
        assert res["killed_error"] == (6, [1]), res["killed_error"]
        assert res["after_kill"] == (5, [], False)
        assert res["gc_removed"] == []
        assert res["full_error"] == (8, [0], True), res["full_error"]
        assert res["after_full"] == (5, [], False)
        assert res["committed_9"] == [9] and res["exact_9"] and res["tracker"] == 9
    assert results[1]["workers_started"] == 2, "rank 1 needs a fresh worker after the kill"
    assert results[0]["workers_started"] == 1, "a failed write does not cost rank 0 its worker"


# --- one slow rank: agreement on is_empty, and retention while a save is in flight ----------


def _slow_rank_and_retention(rank: int, world: int, root_s: str) -> dict[str, Any]:
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.engine.save import SaveTarget
    from cairn_agent.storage import layout
    from cairn_agent.storage.listing import committed_iterations
    from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_retention

    root = Path(root_s)
    io = FaultIO(delay_s=2.0 if rank == 1 else 0.0, delay_match="iter_0000002")
    queue = AsyncSaveQueue(worker_io=io)

    def keep_last_one() -> None:
        if rank == 0:
            iterations = committed_iterations(root)
            tracked = _tracker(root)
            plan = plan_retention(
                iterations,
                RetentionPolicy(keep_last=1),
                protected=[] if tracked is None else [tracked],
            )
            apply_retention(root, plan, generation=0)

    def save(step: int) -> None:
        target = SaveTarget(root=root, iteration=step)
        request = AsyncRequest(
            sharded_state_dict=state(rank, world, step), target=target, on_commit=keep_last_one
        )
        queue.schedule(request)

    out: dict[str, Any] = {}
    save(1)
    queue.maybe_finalize(blocking=True)
    save(2)
    polls: list[tuple[bool, int, list[int]]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        committed = queue.maybe_finalize(blocking=False)
        empty = queue.is_empty()
        on_disk = sorted(committed_iterations(root))
        polls.append((empty, queue.num_unfinalized(), committed))
        if not empty:
            # While iteration 2 is in flight, iteration 1 is the only committed checkpoint and
            # the tracker's target: retention must not have touched it.
            out.setdefault("in_flight_views", []).append((on_disk, _tracker(root)))
            time.sleep(0.05)
        else:
            break
    out["polls"] = polls
    out["final"] = (sorted(committed_iterations(root)), _tracker(root))
    out["iter1_exists"] = layout.iteration_dir(root, 1).exists()
    queue.close()
    return out


def test_slow_rank_is_empty_agrees_and_retention_waits_for_the_commit(tmp_path: Path) -> None:
    fast, slow = run_ranks(_slow_rank_and_retention, WORLD, str(tmp_path))
    assert fast["polls"] == slow["polls"], "ranks disagreed on is_empty / finalize"
    empties = [p[0] for p in fast["polls"]]
    assert empties[-1] is True and empties.count(True) == 1
    assert len(empties) >= 3, "rank 1's delayed write should keep the save in flight a while"
    assert all(p[1] == 1 for p in fast["polls"][:-1])
    assert fast["polls"][-1][2] == [2]
    for view in fast["in_flight_views"] + slow["in_flight_views"]:
        assert view == ([1], 1), view
    assert fast["final"] == ([2], 2) and not fast["iter1_exists"]


# --- the worker is up before the first save; writer settings are validated --------------------


def _first_save_after_first_load(rank: int, world: int, root_s: str) -> dict[str, Any]:
    from cairn_agent import checkpointing

    from tests.api._workload import Job

    job = Job(rank, 0, save=root_s, load=root_s, async_save=True, most_recent_k=2)
    assert job.load() == (0, 0.0)  # nothing to resume: a fresh run's first load
    queue = job.state.async_calls_queue
    assert queue is not None
    after_load = queue.stats()
    alive_after_load = after_load.worker_pid is not None and _alive(after_load.worker_pid)
    job.step()
    job.save()
    checkpointing.maybe_finalize_async_save(job.state, job.state.cfg.checkpoint, blocking=True)
    after_save = queue.stats()
    checkpointing.maybe_finalize_async_save(
        job.state, job.state.cfg.checkpoint, blocking=True, terminate=True
    )
    return {
        "pid_after_load": after_load.worker_pid,
        "pid_alive": alive_after_load,
        "pid_after_save": after_save.worker_pid,
        "started": (after_load.workers_started, after_save.workers_started),
        "tracker": _tracker(Path(root_s)),
    }


def test_first_async_save_starts_no_process_the_first_load_started_it(tmp_path: Path) -> None:
    results = run_ranks(_first_save_after_first_load, WORLD, str(tmp_path / "ckpt"))
    for rank in results:
        assert rank["pid_after_load"] is not None and rank["pid_alive"]
        assert rank["pid_after_save"] == rank["pid_after_load"]
        assert rank["started"] == (1, 1)
        assert rank["tracker"] == 1
    assert results[0]["pid_after_load"] != results[1]["pid_after_load"]


def test_writer_settings_reject_bad_values_naming_the_field_and_the_fix() -> None:
    import pytest
    from cairn_agent.async_save import AsyncRequest
    from cairn_agent.async_save.settings import WriterSettings
    from cairn_agent.engine.save import SaveTarget

    with pytest.raises(ValueError, match=r"WriterSettings.nice=25: use an int in 0..19"):
        WriterSettings(nice=25)
    with pytest.raises(ValueError, match=r"WriterSettings.nice=-1"):
        WriterSettings(nice=-1)
    with pytest.raises(ValueError, match=r"io_priority='realtime': use one of"):
        WriterSettings(io_priority="realtime")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cpu_affinity='spare': use 'auto', 'inherit'"):
        WriterSettings(cpu_affinity="spare")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cores \[4096\] are not available .* or use 'auto'"):
        WriterSettings(cpu_affinity=(4096,))
    with pytest.raises(ValueError, match="non-empty tuple of int core ids"):
        WriterSettings(cpu_affinity=())
    with pytest.raises(ValueError, match="thread_count must be >= 1"):
        AsyncRequest(
            sharded_state_dict={}, target=SaveTarget(root=Path("/x"), iteration=1), thread_count=0
        )
    assert WriterSettings(cpu_affinity=(min(os.sched_getaffinity(0)),)).worker_cores(1, 1) == (
        min(os.sched_getaffinity(0)),
    )


def test_worker_runs_at_the_configured_cpu_and_io_priority_and_cores() -> None:
    import psutil
    from cairn_agent.async_save import AsyncSaveQueue
    from cairn_agent.async_save.settings import WriterSettings

    core = max(os.sched_getaffinity(0))
    queue = AsyncSaveQueue(writer=WriterSettings(nice=7, io_priority="idle", cpu_affinity=(core,)))
    try:
        queue.start_worker(wait=True, timeout=120)
        pid = queue.stats().worker_pid
        assert pid is not None
        worker = psutil.Process(pid)
        assert worker.nice() == psutil.Process().nice() + 7
        assert worker.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        assert worker.cpu_affinity() == [core]
    finally:
        queue.close()


# --- the plan cache: a change on one rank replans everywhere; a failure raises everywhere -----


def _plan_cache(rank: int, world: int, root_s: str) -> dict[str, Any]:
    import torch
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue, plan
    from cairn_agent.engine.save import SaveTarget
    from cairn_agent.errors import CommitError
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    root = Path(root_s)
    queue = AsyncSaveQueue()
    out: dict[str, Any] = {"replans": [], "exact": []}
    for step in (1, 2, 3):
        sd = state(rank, world, step)
        if rank == 1 and step >= 2:  # only rank 1's structure changes, from step 2 on
            sd["extra"] = ShardedTensor.from_rank_offsets("extra", torch.full((5,), step * 1.0))
        expected = plain(sd)
        target = SaveTarget(root=root, iteration=step)
        queue.schedule(AsyncRequest(sharded_state_dict=sd, target=target))
        queue.maybe_finalize(blocking=True)
        out["replans"].append(queue.stats().replans)
        if step >= 2:
            out["exact"].append(same(_load_with_extra(rank, world, root, step), expected))
    if rank == 0:  # planning the next save fails on rank 0 only

        def broken(*_args: Any) -> Any:
            raise RuntimeError("injected planning failure")

        plan._prepare_local = broken
    try:
        request = AsyncRequest(
            sharded_state_dict=state(rank, world, 4), target=SaveTarget(root=root, iteration=4)
        )
        queue.schedule(request)
        out["error"] = None
    except CommitError as exc:
        out["error"] = str(exc)
    queue.close()
    return out


def _load_with_extra(rank: int, world: int, root: Path, step: int) -> dict[str, Any]:
    import torch
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.storage import layout
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    template = empty_like(rank, world)
    if rank == 1:
        template["extra"] = ShardedTensor.from_rank_offsets("extra", torch.zeros(5))
    return plain(load_checkpoint_dir(template, layout.iteration_dir(root, step)))


def test_a_structure_change_on_one_rank_replans_on_every_rank_and_a_failure_raises_on_all(
    tmp_path: Path,
) -> None:
    results = run_ranks(_plan_cache, WORLD, str(tmp_path))
    for res in results:
        # Save 2 changed rank 1's plan: every rank gathered again; save 3 reused it.
        assert res["replans"] == [1, 2, 2]
    assert results[0]["exact"] == results[1]["exact"] == [True, True]
    assert "preparing the async save failed on rank 0: RuntimeError" in results[0]["error"]
    assert "preparing the async save failed on another rank" in results[1]["error"]
