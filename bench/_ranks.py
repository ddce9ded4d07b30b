"""Run one benchmark method on fresh gloo ranks (2 unless ``cfg["world"]``), per-rank metrics.

Invoked as ``python -m bench._ranks <method> <json config>`` by the driver, so every method
starts from fresh processes (first-touch costs and peak RSS are per method). Prints one JSON
line: ``{"ranks": [metrics of rank 0, metrics of rank 1, ...]}``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from bench._probes import proc_status_kib

WORLD = 2
N_TENSORS = 64


def make_state(rank: int, per_rank_bytes: int) -> dict[str, Any]:
    """``N_TENSORS`` random fp32 tensors (seeded, incompressible), keys unique to the rank."""
    import torch

    numel = max(1, per_rank_bytes // 4 // N_TENSORS)
    gen = torch.Generator().manual_seed(1234 + rank)
    return {f"r{rank}.t{i}": torch.rand(numel, generator=gen) for i in range(N_TENSORS)}


def _entry(method: str, rank: int, cfg: dict[str, Any], store: str, queue: Any) -> None:
    world = int(cfg.get("world", WORLD))
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world)
    )
    try:
        import torch
        import torch.distributed as dist

        from bench import _methods

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        _methods.preload()
        # Peak RSS is reported net of the interpreter and libraries, which every method shares.
        rss_before = proc_status_kib("VmRSS")
        state = make_state(rank, int(cfg["per_rank_bytes"]))
        workdir = Path(cfg["workdir"])
        metrics = getattr(_methods, method)(rank, state, workdir, **cfg.get("options", {}))
        metrics.setdefault("hwm_kib", proc_status_kib("VmHWM"))
        metrics["rss_before_state_kib"] = rss_before
        dist.barrier()
        dist.destroy_process_group()
        queue.put((rank, metrics))
    except BaseException:  # noqa: BLE001 - the launcher reports it
        queue.put((rank, {"error": traceback.format_exc()}))


def run(method: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    world = int(cfg.get("world", WORLD))
    with tempfile.TemporaryDirectory(prefix="cairn-bench-store-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            ctx.Process(target=_entry, args=(method, r, cfg, store, queue)) for r in range(world)
        ]
        for proc in procs:
            proc.start()
        results = dict(queue.get(timeout=1800) for _ in range(world))
        for proc in procs:
            proc.join(60)
    return [results[r] for r in range(world)]


if __name__ == "__main__":
    out = run(sys.argv[1], json.loads(sys.argv[2]))
    print(json.dumps({"ranks": out}))
