"""Node-local tier benchmark: local save + replication vs a persistent save of the same state.

Setup: gloo ranks as 2 nodes (``CAIRN_NODE_RANK``; ``CAIRN_BENCH_LOCAL_RANKS_PER_NODE`` ranks
each, default 1: one core per rank on a small machine), each node its own local directory, ``replication_factor=2`` (every part also on the other node). Each rank holds its
own shards (distinct keys, as model-parallel shards are), ``CAIRN_BENCH_LOCAL_MIB`` MiB per
rank (default 64). In every rep, in the same processes, in an order that alternates:

- ``persistent_save_s``: Cairn's persistent save (DCP files, manifest, fsync, commit);
- ``local_save_s``: the local tier's sync save (exchange with the clique, write both copies,
  commit records) into the local root;
- ``persistent_load_s``: loading the persistent checkpoint, its files evicted from the page
  cache first (a restarted job reads shared storage cold);
- ``recovery_s``: node 0's directory deleted, then survey + load of the local iteration: ranks
  0 and 1 receive their parts from node 1, which reads them from its directory.

The slowest rank times each step (a step is done when its last rank is); medians over reps.
The local root is ``CAIRN_BENCH_LOCAL_DIR`` (default ``/dev/shm``, a RAM disk standing in for
node-local NVMe), the persistent root ``CAIRN_BENCH_DIR`` (default the temp dir): the tiers
as deployed. ``local_same_disk_over_persistent`` repeats the local save on the persistent
root's filesystem, to show what the replication itself costs. Writes ``bench/results/local.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
NODES = 2
RANKS_PER_NODE = int(os.environ.get("CAIRN_BENCH_LOCAL_RANKS_PER_NODE", "1"))
WORLD = NODES * RANKS_PER_NODE
N_TENSORS = 32
MIB = 1 << 20
TARGETS = {"local_over_persistent": 0.5, "recovery_over_persistent_load": 1.0}


def _sharded(rank: int, per_rank_bytes: int) -> dict[str, Any]:
    import torch
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    numel = max(1, per_rank_bytes // 4 // N_TENSORS)
    gen = torch.Generator().manual_seed(1000 + rank)
    return {
        f"t{i}": ShardedTensor.from_rank_offsets(
            f"r{rank}.t{i}", torch.rand(numel, generator=gen), replica_id=0
        )
        for i in range(N_TENSORS)
    }


def _template(rank: int, per_rank_bytes: int) -> dict[str, Any]:
    import torch

    sharded = _sharded(rank, per_rank_bytes)
    for value in sharded.values():
        value.data = torch.empty_like(value.data)
    return sharded


def _timed(fn: Any) -> float:
    import torch.distributed as dist

    dist.barrier()
    started = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - started


def _evict(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _tier(local_root: Path) -> Any:
    from cairn_agent.local.tier import LocalTier, TierSettings

    return LocalTier.build(
        TierSettings(local_dir=str(local_root / "{node}"), replication=True, replication_factor=2)
    )


def _local_save(tier: Any, rank: int, per_rank: int, iteration: int) -> float:
    from megatron.core.dist_checkpointing.tensor_aware_state_dict import (
        MCoreTensorAwareStateDict,
    )

    state = _sharded(rank, per_rank)

    def save() -> None:
        part, _ = MCoreTensorAwareStateDict.from_state_dict(state, algo="atomic")
        tier.save(part, iteration)

    return _timed(save)


def _persistent_save(root: Path, rank: int, per_rank: int, iteration: int) -> float:
    from cairn_agent.engine.save import SaveTarget, save_sync

    state = _sharded(rank, per_rank)
    return _timed(lambda: save_sync(state, SaveTarget(root=root, iteration=iteration)))


def _persistent_load(root: Path, rank: int, per_rank: int, iteration: int) -> float:
    import torch.distributed as dist
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.storage import layout

    directory = layout.iteration_dir(root, iteration)
    if rank == 0:
        _evict(directory)
    dist.barrier()
    template = _template(rank, per_rank)
    return _timed(lambda: load_checkpoint_dir(template, directory, verify=True))


def _recovery(local_root: Path, rank: int, per_rank: int) -> float:
    import torch.distributed as dist
    from cairn_agent.local.exchange import to_state_dict

    if rank == 0:
        shutil.rmtree(local_root / "node-0")
    dist.barrier()
    template = _template(rank, per_rank)
    tier = _tier(local_root)  # a restarted job: fresh manager and groups (its start-up, untimed)

    def recover() -> None:
        tier.survey()
        part, _ = tier.load()
        to_state_dict(part, template, "atomic", None)

    return _timed(recover)


def _one_rep(
    rep: int, rank: int, per_rank: int, persistent: Path, local: Path, same_disk: Path
) -> dict[str, float]:
    row: dict[str, float] = {}
    iteration = rep + 1
    tier, disk_tier = _tier(local), _tier(same_disk)
    steps = [
        ("persistent_save_s", lambda: _persistent_save(persistent, rank, per_rank, iteration)),
        ("local_save_s", lambda: _local_save(tier, rank, per_rank, iteration)),
        ("local_same_disk_s", lambda: _local_save(disk_tier, rank, per_rank, iteration)),
    ]
    for name, step in steps if rep % 2 == 0 else list(reversed(steps)):
        row[name] = step()
    row["persistent_load_s"] = _persistent_load(persistent, rank, per_rank, iteration)
    row["recovery_s"] = _recovery(local, rank, per_rank)
    return row


def _rank_main(rank: int, store: str, cfg: dict[str, Any], out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["CAIRN_NODE_RANK"] = str(rank // RANKS_PER_NODE)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    per_rank = int(cfg["per_rank_bytes"])
    persistent, local, same_disk = (Path(cfg[k]) for k in ("persistent", "local", "same_disk"))
    rows = [
        _one_rep(rep, rank, per_rank, persistent, local, same_disk)
        for rep in range(int(cfg["reps"]))
    ]
    out.put((rank, rows))
    dist.destroy_process_group()


def _run(cfg: dict[str, Any]) -> list[dict[str, float]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-store-") as store_dir:
        store = os.path.join(store_dir, "store")
        procs = [ctx.Process(target=_rank_main, args=(r, store, cfg, out)) for r in range(WORLD)]
        for proc in procs:
            proc.start()
        per_rank = dict(out.get(timeout=1800) for _ in range(WORLD))
        for proc in procs:
            proc.join(timeout=60)
    reps = len(per_rank[0])
    # The slowest rank times each step.
    return [
        {k: max(per_rank[r][i][k] for r in range(WORLD)) for k in per_rank[0][i]}
        for i in range(reps)
    ]


def main() -> dict[str, Any]:
    mib = int(os.environ.get("CAIRN_BENCH_LOCAL_MIB", "64"))
    reps = int(os.environ.get("CAIRN_BENCH_REPS", "5"))
    default_local = "/dev/shm" if Path("/dev/shm").is_dir() else None
    local_parent = os.environ.get("CAIRN_BENCH_LOCAL_DIR", default_local)
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-", dir=os.environ.get("CAIRN_BENCH_DIR")))
    local = Path(tempfile.mkdtemp(prefix="cairn-bench-local-", dir=local_parent))
    cfg = {
        "per_rank_bytes": mib * MIB,
        "reps": reps,
        "persistent": str(scratch / "persistent"),
        "local": str(local),
        "same_disk": str(scratch / "local"),
    }
    print(
        f"local bench: {WORLD} ranks as {NODES} nodes, {mib} MiB per rank, {reps} reps; "
        f"persistent {scratch}, local {local}"
    )
    try:
        rows = _run(cfg)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)
    summary = _summary(rows, cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    for key, bound in TARGETS.items():
        verdict = "ok" if summary[key] <= bound else "MISSED"
        print(f"  {key:34s} {summary[key]:7.3f}   (<= {bound})  {verdict}")
    print(f"  local_same_disk_over_persistent    {summary['local_same_disk_over_persistent']:7.3f}")
    return summary


def _summary(rows: list[dict[str, float]], cfg: dict[str, Any]) -> dict[str, Any]:
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratios = [
        {
            "local_over_persistent": r["local_save_s"] / r["persistent_save_s"],
            "local_same_disk_over_persistent": r["local_same_disk_s"] / r["persistent_save_s"],
            "recovery_over_persistent_load": r["recovery_s"] / r["persistent_load_s"],
        }
        for r in rows
    ]
    return {
        **{k: statistics.median(r[k] for r in ratios) for k in ratios[0]},
        "median_seconds": median,
        "ratios_per_rep": ratios,
        "reps": len(rows),
        "world": WORLD,
        "nodes": NODES,
        "replication_factor": 2,
        "bytes_per_rank": cfg["per_rank_bytes"],
        "persistent_dir_fs": _fs_of(Path(cfg["persistent"]).parent),
        "local_dir_fs": _fs_of(Path(cfg["local"])),
    }


def _fs_of(path: Path) -> str:
    """The filesystem type a path is on (from /proc/mounts; longest matching mount point)."""
    try:
        mounts = [line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best = max(
        (m for m in mounts if resolved == m[1] or resolved.startswith(m[1].rstrip("/") + "/")),
        key=lambda m: len(m[1]),
        default=None,
    )
    return f"{best[2]} ({best[1]})" if best else "unknown"


if __name__ == "__main__":
    main()
