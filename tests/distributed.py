"""Run a test body on N real ``torch.distributed`` ranks (gloo, CPU), one process each.

Ranks rendezvous through a ``FileStore`` in a fresh temporary directory, so concurrent test
runs never collide on ports. The body must be a module-level function (it is pickled to
the rank processes); it receives ``(rank, world_size, *args)``. Whatever rank ``r`` returns comes back
at index ``r``; an exception on any rank fails the call with that rank's traceback.

Rank processes are forked from a multiprocessing *forkserver* that has already imported torch
and megatron-core (seconds of CPU per process otherwise), so every call still gets fresh
processes -- no state leaks between tests -- without paying those imports again. Cairn's own
modules are deliberately not preloaded, so each rank imports them fresh.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

DEFAULT_TIMEOUT_S = 240.0

# Third-party modules only: importing them in the forkserver is what makes each rank cheap.
_PRELOAD = [
    "torch",
    "torch.distributed",
    "torch.distributed.checkpoint",
    "numpy",
    "megatron.core.dist_checkpointing",
    "megatron.core.dist_checkpointing.strategies.torch",
    "megatron.core.parallel_state",
]
_CONTEXT: Any = None


def rank_context() -> Any:
    """The multiprocessing context rank processes start from (a preloaded forkserver)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(_PRELOAD)
    return _CONTEXT


def _entry(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    store_path: str,
    args: tuple[Any, ...],
    queue: Any,
) -> None:
    import torch
    import torch.distributed as dist

    torch.manual_seed(1234 + rank)
    torch.set_num_threads(1)
    os.environ["RANK"] = str(rank)
    os.environ["WORLD_SIZE"] = str(world_size)
    os.environ["LOCAL_RANK"] = str(rank)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size
        )
        result = fn(rank, world_size, *args)
        queue.put((rank, True, result))
    except BaseException:  # noqa: BLE001 - the parent re-raises with the traceback
        queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks and return their results."""
    ctx = rank_context()
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="cairn-store-") as store_dir:
        store_path = os.path.join(store_dir, "store")
        procs = [
            ctx.Process(
                target=_entry, args=(fn, r, world_size, store_path, args, queue), daemon=False
            )
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        try:
            for _ in range(world_size):
                rank, ok, payload = queue.get(timeout=timeout_s)
                (results if ok else errors)[rank] = payload
        except queue_module.Empty as exc:  # some rank hung or died without reporting
            missing = sorted(set(range(world_size)) - set(results) - set(errors))
            errors.setdefault(-1, f"ranks {missing} did not report within {timeout_s}s: {exc!r}")
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join()
    if errors:
        detail = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(errors.items()))
        raise AssertionError(f"distributed test body failed:\n{detail}")
    return [results[r] for r in range(world_size)]
