"""A self-contained round trip through the engine on real gloo ranks (``cairn demo``).

Spawns ``world_size`` CPU processes that rendezvous through a ``FileStore`` in a temporary
directory, save a small sharded state with :func:`save_sync` under ``root``, load it back into
zeroed buffers, and compare bit for bit. The parent then verifies the committed directory's
manifest (sizes and CRC-32s) and returns a readable summary.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from cairn_agent.storage import layout
from cairn_agent.storage.manifest import verify_checkpoint_dir

DEMO_ITERATION = 100
_TIMEOUT_S = 300.0
_ROWS_PER_RANK = 4
_COLS = 8


def roundtrip_demo(root: Path, world_size: int = 2) -> str:
    """Save and reload a sharded state on ``world_size`` gloo ranks under ``root``; summarise.

    Raises ``RuntimeError`` if any rank fails or any value does not come back identical.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    root = Path(root)
    results = _spawn(world_size, root)
    final = layout.iteration_dir(root, DEMO_ITERATION)
    manifest = verify_checkpoint_dir(final, deep=True)
    if manifest is None:
        raise RuntimeError(f"{final} has no Cairn manifest")
    lines = [
        f"saved iteration {DEMO_ITERATION} from {world_size} gloo ranks into {final}",
        f"tracker {layout.TRACKER_FILENAME} reads {layout.tracker_path(root).read_text()!r}",
        f"manifest verified: {len(manifest.files)} files, {manifest.total_bytes} bytes, "
        + "crc32 checked",
    ]
    lines += [
        f"  {name:<24} {entry.size:>8} B  crc32 {entry.crc32}"
        for name, entry in sorted(manifest.files.items())
    ]
    lines += [f"rank {r}: {summary}" for r, summary in enumerate(results)]
    return "\n".join(lines)


def _spawn(world_size: int, root: Path) -> list[str]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="cairn-demo-store-") as store_dir:
        store = str(Path(store_dir) / "store")
        procs = [
            ctx.Process(target=_rank_main, args=(rank, world_size, store, str(root), queue))
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        try:
            reports = _collect(procs, queue)
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
    failures = [text for _, ok, text in reports if not ok]
    if failures:
        raise RuntimeError("demo failed:\n" + "\n".join(failures))
    return [text for _, _, text in sorted(reports)]


def _collect(procs: list[Any], queue: Any) -> list[tuple[int, bool, str]]:
    """Every rank's report; fails fast when a rank dies without one, or at the deadline."""
    deadline = time.monotonic() + _TIMEOUT_S
    reports: list[tuple[int, bool, str]] = []
    while len(reports) < len(procs):
        try:
            reports.append(queue.get(timeout=1.0))
            continue
        except queue_module.Empty:
            pass
        crashed = [rank for rank, proc in enumerate(procs) if proc.exitcode not in (None, 0)]
        if crashed:
            raise RuntimeError(f"demo ranks {crashed} died without reporting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo ranks did not finish within {_TIMEOUT_S:.0f}s")
    return reports


def _rank_main(rank: int, world_size: int, store: str, root: str, queue: Any) -> None:
    import torch.distributed as dist

    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
        )
        queue.put((rank, True, _roundtrip(rank, world_size, Path(root))))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        queue.put((rank, False, f"rank {rank}:\n{traceback.format_exc()}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _state(rank: int, world_size: int, fill: bool) -> dict[str, Any]:
    import torch
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    gen = torch.Generator().manual_seed(rank)
    rows = (
        torch.randn(_ROWS_PER_RANK, _COLS, generator=gen)
        if fill
        else torch.zeros(_ROWS_PER_RANK, _COLS)
    )
    shared = torch.linspace(0, 1, 16) if fill else torch.zeros(16)
    return {
        "weight": ShardedTensor.from_rank_offsets("weight", rows, (0, rank, world_size)),
        "bias": ShardedTensor.from_rank_offsets("bias", shared, replica_id=rank),
        "rng": ShardedObject("rng", {"seed": rank} if fill else None, (world_size,), (rank,)),
        "iteration": DEMO_ITERATION,
    }


def _roundtrip(rank: int, world_size: int, root: Path) -> str:
    import torch

    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync

    saved = _state(rank, world_size, fill=True)
    target = SaveTarget(root=root, iteration=DEMO_ITERATION, layout={"dp": world_size})
    final = save_sync(saved, target)
    loaded = load_checkpoint_dir(_state(rank, world_size, fill=False), final)
    same = (
        torch.equal(loaded["weight"], saved["weight"].data)
        and torch.equal(loaded["bias"], saved["bias"].data)
        and loaded["rng"] == {"seed": rank}
        and loaded["iteration"] == DEMO_ITERATION
    )
    if not same:
        raise RuntimeError(f"rank {rank}: loaded values differ from the saved ones")
    shape = tuple(saved["weight"].data.shape)
    return f"shard of {shape} rows + replicated bias + rng object restored bit-exact"
