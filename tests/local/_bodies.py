"""Rank bodies of the node-local tier tests: 4 gloo ranks as 2 nodes x 2 ranks.

Ranks 0-1 run on ``node-0`` and ranks 2-3 on ``node-1`` (``CAIRN_NODE_RANK``, as a launcher
would set it); each node keeps its local checkpoints in its own directory
(``<tmp>/node-<n>``, from the ``{node}`` template). With ``replication_factor=2`` the cliques
are nvrx's ``[0, 2]`` and ``[1, 3]``: every part has one copy on each node.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from tests.api._workload import Job, peek_random

RANKS_PER_NODE = 2
WORLD = 4
ASYNC_FULLY_PARALLEL = {"async_save": True, "non_persistent_local_ckpt_algo": "fully_parallel"}


def as_node(rank: int, env: dict[str, str] | None = None) -> None:
    """This rank's launcher environment: its node, and the pod environment if any."""
    os.environ["CAIRN_NODE_RANK"] = str(rank // RANKS_PER_NODE)
    os.environ.update(env or {})


def settings(root: Path, local_root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "save": str(root),
        "load": str(root),
        "non_persistent_ckpt_type": "local",
        "non_persistent_local_ckpt_dir": str(local_root / "{node}"),
        "non_persistent_local_ckpt_algo": "atomic",
        "replication": True,
        "replication_factor": 2,
        **extra,
    }


def _plain(value: Any) -> Any:
    """Tensors as (dtype, shape, bytes): comparable bit for bit, and safe to send to the test."""
    if torch.is_tensor(value):
        return (str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
    return value


def snapshot(job: Job) -> dict[str, Any]:
    """Everything a bit-exact resume must restore."""
    ts = job.state.train_state
    optim = {
        f"{pid}.{name}": _plain(value)
        for pid, entry in job.optimizer.state_dict()["state"].items()
        for name, value in entry.items()
    }
    return {
        "params": {k: _plain(v) for k, v in job.params().items()},
        "optim": optim,
        "scheduler": job.scheduler.state_dict(),
        "rng": peek_random(),
        "train": (ts.step, ts.consumed_train_samples, float(ts.floating_point_operations_so_far)),
        "data_pos": job.data.pos,
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of what differs between two snapshots ([] when bit-identical)."""
    return [k for k in a if a[k] != b[k]] + [k for k in b if k not in a]


class Recorder(logging.Handler):
    """The rank's error log, to return to the test."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        logging.getLogger("cairn_agent").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def context_for(job: Job) -> dict[str, Any]:
    from cairn_agent import checkpointing

    return checkpointing.init_checkpointing_context(job.state.cfg.checkpoint)


def close_reporter(job: Job) -> None:
    from cairn_agent.cluster import reporting

    target = reporting.reporter(job.state)
    if target is not None:
        target.flush(timeout=30)
        target.close()


# --- bodies -------------------------------------------------------------------------------------


def train_with_tiers(
    rank: int, world: int, root: str, local_root: str, steps: int, extra: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """Local saves every 2 steps, persistent every 3; snapshots of every saved step, and the
    files of each rank directory after every committed local save."""
    from cairn_agent import checkpointing

    as_node(rank)
    job = Job(rank, 0, **settings(Path(root), Path(local_root), **extra))
    context = context_for(job)
    ckpt = job.state.cfg.checkpoint
    saved: dict[int, dict[str, Any]] = {}
    for step in range(1, steps + 1):
        job.step()
        if step % 3 == 0:
            job.save()
        if step % 2 == 0:
            job.save(non_persistent_ckpt=True, checkpointing_context=context)
        if step % 2 == 0 or step % 3 == 0:
            saved[step] = snapshot(job)
        checkpointing.maybe_finalize_async_save(job.state, ckpt)
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    return saved


def resume_then_persist(
    rank: int, world: int, root: str, local_root: str, env: dict[str, str]
) -> dict[str, Any]:
    """Resume (the local tier is newest), train a step, save persistently; a second fresh job
    then resumes from that persistent checkpoint (now the newest)."""
    as_node(rank, env)
    first = Job(rank, 9, **settings(Path(root), Path(local_root)))
    iteration, _ = first.load(checkpointing_context=context_for(first))
    resumed = snapshot(first)
    first.step()
    first.save()
    expected = snapshot(first)
    second = Job(rank, 5, **settings(Path(root), Path(local_root)))
    second_iteration, _ = second.load(checkpointing_context=context_for(second))
    close_reporter(first)
    close_reporter(second)
    return {
        "iterations": (iteration, second_iteration),
        "resumed": resumed,
        "second_differs": same(snapshot(second), expected),
    }


def resume(
    rank: int,
    world: int,
    root: str,
    local_root: str,
    extra: dict[str, Any],
    env: dict[str, str] | None,
    then_save: bool,
) -> dict[str, Any]:
    """A fresh job resumes; optionally trains one step and saves locally again."""
    from cairn_agent import checkpointing

    as_node(rank, env)
    recorder = Recorder()
    job = Job(rank, 9, **settings(Path(root), Path(local_root), **extra))
    context = context_for(job)
    iteration, _ = job.load(checkpointing_context=context)
    got = {"iteration": iteration, "snapshot": snapshot(job), "errors": recorder.lines}
    if then_save:
        job.step()
        job.save(non_persistent_ckpt=True, checkpointing_context=context)
        ckpt = job.state.cfg.checkpoint
        checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    close_reporter(job)
    return got


def save_then_hang(rank: int, world: int, root: str, local_root: str, ready_dir: str) -> None:
    """Local save at step 2 (committed), an async one at step 4 that is never finalized.

    Each rank then says so in ``ready_dir`` and waits to be killed. A 16 MiB buffer per rank
    makes the async write take long enough to be caught in the middle.
    """
    from cairn_agent import checkpointing

    as_node(rank)
    job = Job(rank, 0, **settings(Path(root), Path(local_root), **ASYNC_FULLY_PARALLEL))
    job.model.register_buffer("ballast", torch.rand(2048, 2048))
    context = context_for(job)
    ckpt = job.state.cfg.checkpoint
    for step in range(1, 5):
        job.step()
        if step % 2 == 0:
            job.save(non_persistent_ckpt=True, checkpointing_context=context)
        if step == 2:
            checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True)
            torch.save(snapshot(job), Path(ready_dir) / f"snapshot_{rank}.pt")
    (Path(ready_dir) / f"ready_{rank}").touch()
    while True:  # the test SIGKILLs the whole job from here on
        time.sleep(0.05)


def resume_after_kill(rank: int, world: int, root: str, local_root: str) -> dict[str, Any]:
    """A fresh job (with the ballast buffer) resumes, then saves locally at step 3."""
    from cairn_agent import checkpointing

    as_node(rank)
    job = Job(rank, 9, **settings(Path(root), Path(local_root), **ASYNC_FULLY_PARALLEL))
    job.model.register_buffer("ballast", torch.zeros(2048, 2048))
    context = context_for(job)
    iteration, _ = job.load(checkpointing_context=context)
    got = {"iteration": iteration, "snapshot": snapshot(job)}
    job.step()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)
    ckpt = job.state.cfg.checkpoint
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    return got
