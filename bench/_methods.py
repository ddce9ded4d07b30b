"""The peers and baselines of the save benchmarks, each as seen by one of the gloo ranks.

Every function takes ``(rank, state, workdir, **options)`` (``state``: this rank's random fp32
tensors, keys unique per rank) and returns this rank's timings in seconds. The driver takes the
slowest rank per rep (a save is done when its last rank is). Timed regions start after a
barrier so both ranks start together.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench._probes import evict, files_under, probe_rate, proc_status_kib, settle_disk

# Writer threads (files) per rank, as CheckpointConfig.storage_writers_per_rank defaults: with
# writeback streamed during the write, one thread per rank matched or beat two and four on this
# 2-core machine (1 GiB, 3 interleaved reps under load: 1.28 s vs 2.28 s vs 1.58 s; plain DCP
# with fsync 2.17 s); bench/writer_knobs.py measures it per run.
CAIRN_THREADS = 1
ASYNC_SAVES = 4  # first save, two steady-state saves, one with the compute probe
DCP_SAVES = 3  # first save and two steady-state saves, as cairn_async times them
WRITEBACK_BYTES = 64 << 20


def preload() -> None:
    """Import everything any method uses, so per-method RSS excludes library code."""
    import torch.distributed.checkpoint  # noqa: F401
    from cairn_agent.async_save import queue  # noqa: F401
    from cairn_agent.engine import load, save  # noqa: F401
    from megatron.core.dist_checkpointing import mapping  # noqa: F401


def _timed(fn: Any) -> tuple[float, Any]:
    dist.barrier()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def baselines(rank: int, state: dict[str, torch.Tensor], workdir: Path) -> dict[str, Any]:
    """memcpy into pre-faulted buffers, fsync'ed sequential write (plain, and with writeback
    started as it goes: what the disk gives a careful writer), cold sequential read."""
    dst = {k: torch.empty_like(v) for k, v in state.items()}
    for k, v in state.items():  # first touch, untimed: the floor is a pre-faulted copy
        dst[k].copy_(v)
    memcpy_s, _ = _timed(lambda: [dst[k].copy_(v) for k, v in state.items()])
    # libc's memcpy, the floor of Cairn's staging copy (which uses it): reported beside the
    # Tensor.copy_ floor above, which is what a clone-based stager (DCP's) pays.
    libc_s, _ = _timed(lambda: [_memmove(dst[k], v) for k, v in state.items()])
    path = workdir / f"raw_{rank}.bin"
    # No settle before the first write: the process imported for ~7 s since the last delete.
    write_s, _ = _timed(lambda: _write_fsync(path, state))
    path.unlink()
    settle_disk()
    write_stream_s, _ = _timed(lambda: _write_fsync(path, state, stream=True))
    evict([path])
    buf = bytearray(path.stat().st_size)
    read_s, _ = _timed(lambda: _read_into(path, buf))
    # The disk's ceiling for reads: the same file cold again, read the way Cairn's loader reads
    # (READ_THREADS threads of READ_REQUEST_BYTES requests), by both ranks at once.
    evict([path])
    read_parallel_s, _ = _timed(lambda: _read_parallel(path, buf))
    idle_rate = probe_rate(lambda: False, min_s=1.0)
    path.unlink()
    return {
        "memcpy_s": memcpy_s,
        "memcpy_libc_s": libc_s,
        "write_s": write_s,
        "write_stream_s": write_stream_s,
        "read_s": read_s,
        "read_parallel_s": read_parallel_s,
        "idle_rate": idle_rate,
    }


def _memmove(dst: torch.Tensor, src: torch.Tensor) -> None:
    ctypes.memmove(dst.data_ptr(), src.data_ptr(), src.numel() * src.element_size())


def _write_fsync(path: Path, state: dict[str, torch.Tensor], stream: bool = False) -> None:
    from cairn_agent.storage.durable import start_writeback

    with open(path, "wb") as handle:
        done = 0
        for tensor in state.values():
            handle.write(memoryview(tensor.numpy()).cast("B"))
            if stream and handle.tell() - done >= WRITEBACK_BYTES:
                handle.flush()
                start_writeback(handle.fileno(), done, handle.tell() - done)
                done = handle.tell()
        handle.flush()
        os.fsync(handle.fileno())


def _read_into(path: Path, buf: bytearray) -> None:
    with open(path, "rb", buffering=0) as handle:
        view = memoryview(buf)
        while view:
            n = handle.readinto(view)
            if not n:
                break
            view = view[n:]


def _read_parallel(path: Path, buf: bytearray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cairn_agent.engine.direct_read import READ_REQUEST_BYTES, READ_THREADS

    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            offsets = range(0, len(buf), READ_REQUEST_BYTES)
            list(pool.map(lambda o: os.preadv(fd, [view[o : o + READ_REQUEST_BYTES]], o), offsets))
    finally:
        os.close(fd)


def torch_save(rank: int, state: dict[str, torch.Tensor], workdir: Path) -> dict[str, Any]:
    path = workdir / f"torch_{rank}.pt"

    def save() -> None:
        torch.save(state, path)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    e2e, _ = _timed(save)
    return {"blocking_s": e2e, "e2e_s": e2e}


def _dcp(threads: int, saves: int) -> Any:
    def method(rank: int, state: dict[str, torch.Tensor], workdir: Path) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.filesystem import FileSystemWriter

        # Saves spaced as cairn_async's are: the first is the process's first write, the
        # others follow the previous checkpoint's deletion and a settle, so that steady saves
        # are compared with steady saves and first with first (a write's speed on this disk
        # depends on what came before it; save.json reports dcp_save_steady_over_first).
        e2e = []
        for it in range(1, saves + 1):
            writer = FileSystemWriter(workdir / f"dcp_{it}", thread_count=threads)
            took, _ = _timed(lambda w=writer: dcp.save(state, storage_writer=w))
            e2e.append(took)
            if it < saves:
                if rank == 0:
                    shutil.rmtree(workdir / f"dcp_{it}", ignore_errors=True)
                settle_disk()
        steady = _median(e2e[1:]) if saves > 1 else e2e[0]
        return {"blocking_s": steady, "e2e_s": steady, "e2e_first_s": e2e[0]}

    return method


dcp_save = _dcp(1, DCP_SAVES)
# Two DCP threads, timed once (compared first with first): a steady series of both DCP
# variants would put `make bench` over its 30 minutes.
dcp_save_t2 = _dcp(2, 1)


def dcp_async_save(rank: int, state: dict[str, torch.Tensor], workdir: Path) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    # Warm-up save first: its thread pool and plan are one-time costs, like Cairn's first save.
    dcp.async_save(state, storage_writer=FileSystemWriter(workdir / "dcp_async_warm")).result()
    idle = probe_rate(lambda: False, min_s=1.0)
    writer = FileSystemWriter(workdir / "dcp_async")
    blocking, future = _timed(lambda: dcp.async_save(state, storage_writer=writer))
    start = time.perf_counter() - blocking
    busy = probe_rate(lambda: not future.done())
    future.result()
    e2e = time.perf_counter() - start
    hwm = proc_status_kib("VmHWM")
    return {"blocking_s": blocking, "e2e_s": e2e, "compute_ratio": busy / idle, "hwm_kib": hwm}


def _sharded(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    return {k: ShardedTensor.from_rank_offsets(k, v) for k, v in state.items()}


def cairn_sync(
    rank: int, state: dict[str, torch.Tensor], workdir: Path, threads: int = CAIRN_THREADS
) -> dict[str, Any]:
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync

    target = SaveTarget(root=workdir / "cairn_sync", iteration=1)
    sharded = _sharded(state)
    e2e, final = _timed(lambda: save_sync(sharded, target, thread_count=threads))
    hwm = proc_status_kib("VmHWM")
    if rank == 0:
        evict(files_under(final))
    # Loads in place into the same tensors (DCP reads into the given storage).
    load_s, _ = _timed(lambda: load_checkpoint_dir(_sharded(state), final))
    return {"blocking_s": e2e, "e2e_s": e2e, "load_cold_s": load_s, "hwm_kib": hwm}


def cairn_async(
    rank: int,
    state: dict[str, torch.Tensor],
    workdir: Path,
    threads: int = CAIRN_THREADS,
    saves: int = ASYNC_SAVES,
    probe: bool = True,
    **writer: Any,
) -> dict[str, Any]:
    """``saves`` async saves through one worker, started and ready before the first save (as
    the facade's first load starts it); with ``probe``, training's compute rate is measured
    during the last one; ``writer``: ``WriterSettings`` fields."""
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.async_save.settings import WriterSettings
    from cairn_agent.engine.save import SaveTarget

    root = workdir / "cairn_async"
    if isinstance(writer.get("cpu_affinity"), list):
        writer["cpu_affinity"] = tuple(writer["cpu_affinity"])
    queue = AsyncSaveQueue(writer=WriterSettings(**writer))
    queue.start_worker(wait=True)
    # As the facade does at the first step boundary: plan and map the buffer ahead (untimed).
    queue.prepare(_sharded(state))
    blocking, e2e, ratio = [], [], 0.0
    for it in range(1, saves + 1):
        request = AsyncRequest(
            sharded_state_dict=_sharded(state),
            target=SaveTarget(root=root, iteration=it),
            thread_count=threads,
        )
        # Idle compute rate right before the probed save, so both rates see the same load.
        probed = probe and it == saves
        idle = probe_rate(lambda: False, min_s=1.0) if probed else 0.0
        took, _ = _timed(lambda r=request: queue.schedule(r))
        start = time.perf_counter() - took
        if probed:
            ratio = probe_rate(lambda: queue.writes_in_progress() > 0) / idle
        queue.maybe_finalize(blocking=True)
        blocking.append(took)
        e2e.append(time.perf_counter() - start)
        if it < saves:
            # Untimed, exactly as dcp_save: the next save follows this one's deletion and a
            # settle. Keeping the previous checkpoint instead (as a job's retention would) put
            # the second save, alone of all the steady saves of both methods, after no deletion;
            # on this disk such a write took ~1.3x as long (steady async e2e 2.34 / 2.47 / 3.18
            # / 2.42 s against 1.62 / 2.18 / 2.62 / 1.82 s, interleaved reps of one session).
            _drop(root, it, rank)
            settle_disk()
    hwm = proc_status_kib("VmHWM")
    queue.close()
    steady = (e2e[1:-1] if probe else e2e[1:]) or e2e[1:]
    out = {
        "blocking_first_s": blocking[0],
        "e2e_first_s": e2e[0],
        "blocking_s": _median(blocking[1:]),
        "e2e_s": _median(steady),
        "hwm_kib": hwm,
    }
    return {**out, "compute_ratio": ratio} if probe else out


def _median(values: list[float]) -> float:
    """The upper median (of two values, the larger): the same rule for every method."""
    return sorted(values)[len(values) // 2]


def _drop(root: Path, iteration: int, rank: int) -> None:
    from cairn_agent.storage import layout

    if rank == 0:
        shutil.rmtree(layout.iteration_dir(root, iteration), ignore_errors=True)


def scaling_point(rank: int, state: dict[str, torch.Tensor], workdir: Path) -> dict[str, Any]:
    """One point of the scaling curves: baselines, sync save + cold load, async saves."""
    out = baselines(rank, state, workdir)
    out.update(cairn_sync(rank, state, workdir))
    _clear(workdir, rank)
    # No compute probe: the curves report no compute rate, and a save starved by the probe's
    # compute takes several times as long (~40 s at 4 GiB).
    asynchronous = cairn_async(rank, state, workdir, saves=2, probe=False)
    out.update({f"async_{k}": v for k, v in asynchronous.items() if k != "hwm_kib"})
    return out


def _clear(workdir: Path, rank: int) -> None:
    dist.barrier()
    if rank == 0:
        for entry in workdir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    settle_disk()
    dist.barrier()
