"""An async local save without replication keeps the state of the step it was taken at.

Training goes on while the part is written: the step after the save bumps the weights, Adam's
moments and Adam's step counters (tensors in the common state) in place. The resume must get
the saved step's values of all of them, on 2 gloo ranks as 2 nodes (1 rank each).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.api._workload import Job
from tests.distributed import run_ranks
from tests.local import _bodies as bodies

WORLD = 2


def _slow_disk() -> threading.Event:
    """Part writes wait until the returned event is set: a disk slower than a training step."""
    from cairn_agent.local.store import PartStore

    go = threading.Event()
    write = PartStore.write_part

    def slow_write(self: PartStore, *args: Any, **kwargs: Any) -> Any:
        go.wait(timeout=60)
        return write(self, *args, **kwargs)

    PartStore.write_part = slow_write  # type: ignore[method-assign]
    return go


def train_during_write(rank: int, world: int, root: str, local_root: str) -> dict[str, Any]:
    """Local async save at step 2, one more step before it is written and finalized; then a
    fresh job resumes."""
    from cairn_agent import checkpointing

    bodies.as_node(rank * bodies.RANKS_PER_NODE)  # rank r on node-r
    extra = {"replication": False, **bodies.ASYNC_FULLY_PARALLEL}
    job = Job(rank, 0, **bodies.settings(Path(root), Path(local_root), **extra))
    context = bodies.context_for(job)
    ckpt = job.state.cfg.checkpoint
    job.step()
    job.step()
    go = _slow_disk()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)
    saved = bodies.snapshot(job)
    job.step()
    after = bodies.snapshot(job)
    go.set()
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    fresh = Job(rank, 9, **bodies.settings(Path(root), Path(local_root), **extra))
    iteration, _ = fresh.load(checkpointing_context=bodies.context_for(fresh))
    resumed = bodies.snapshot(fresh)
    return {
        "iteration": iteration,
        "moved": bodies.same(saved, after),
        "differs": bodies.same(resumed, saved),
    }


def test_training_during_an_async_local_write_does_not_leak_into_it(tmp_path: Path) -> None:
    got = run_ranks(train_during_write, WORLD, str(tmp_path / "ckpt"), str(tmp_path / "local"))
    for result in got:
        assert {"params", "optim"} <= set(result["moved"])  # the next step changed both
        assert result["iteration"] == 2
        assert result["differs"] == []
