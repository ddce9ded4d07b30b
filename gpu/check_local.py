"""Check 4: node-local checkpoints through the seed API, as a training job takes them.

One rank (world size 1) on the group's device, ``save_checkpoint(non_persistent_ckpt=True)``
with ``non_persistent_ckpt_type="local"`` and a fresh job (fresh model, optimizer,
``GlobalState`` and checkpointing context, i.e. a restarted process) resuming with
``load_checkpoint``. Every resume must give back the saved weights and Adam state bit-exact,
on the device. Each part runs under its own time bound and prints one line of result:

- ``atomic``: a persistent save at step 1, a local one at step 2 (the launcher's node from
  ``CAIRN_NODE_RANK``, the directory from the ``{node}`` template): the resume takes the
  newer local iteration, whose part and commit record sit in ``<dir>/node-0/0``.
- ``fully_parallel`` (Bridge's default algorithm): local saves at steps 2 and 3 into
  ``CAIRN_LOCAL_DIR``; the resume takes 3, and 2 is gone (one iteration at rest).
- ``async``: ``async_save`` on; the save returns before anything is committed, training takes
  another step while the part is written, ``maybe_finalize_async_save`` commits it; the
  resume gets the state of the saved step, not the live one.
- ``replication``: ``replication=True`` with ``replication_factor=1``, the only factor one
  rank allows (one copy per part, so Cairn builds no clique); ``replication_factor=2`` is
  refused up front with a ``ValueError`` naming what to change.
- ``exchange``: the device-side exchange that replication runs between clique members
  (``local.exchange.GroupExchange``: parts packed into one buffer on the group's device,
  NCCL or gloo, landing in host memory), called directly on the one-rank group, bit-exact.

What one rank cannot show: a replica landing on another rank or node (factor >= 2 needs at
least two ranks, and NCCL refuses two ranks on one GPU), a restarted rank whose node-local
directory is gone retrieving its part from a peer, and ``fully_parallel`` shards moving
between ranks. ``tests/local/`` covers those on CPU with 4 gloo ranks as 2 nodes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gpu._common import Verdict, bound_s, bounded, device, devices_of, randn, same_tensors
from gpu._job import Job

BOUNDS_S = {"atomic": 15, "fully_parallel": 8, "async": 15, "replication": 8, "exchange": 6}
"""Each part's bound on a GPU (doubled without CUDA), there to name a part that hangs: 52 s
of the check's 60. On CPU a part takes under 3 s (``async`` starts the resumed job's async
worker process); the first part on a GPU also pays CUDA's and NCCL's first use."""


def _settings(local_dir: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "non_persistent_ckpt_type": "local",
        "non_persistent_local_ckpt_dir": str(local_dir),
        **extra,
    }


def _state(job: Job) -> dict[str, torch.Tensor]:
    """Everything a bit-exact resume restores that the job can look at: weights, Adam state."""
    out = job.weights()
    for pid, entry in job.optimizer.state_dict()["state"].items():
        out.update({f"optim.{pid}.{k}": v.detach().clone() for k, v in entry.items()})
    return out


def _context(job: Job) -> dict[str, Any]:
    from cairn_agent import checkpointing

    return checkpointing.init_checkpointing_context(job.state.cfg.checkpoint)


def _resumed(
    verdict: Verdict, name: str, root: Path, settings: dict[str, Any], want: tuple[int, Any]
) -> None:
    """A fresh job resumes from ``root`` and the local tier: iteration and state as wanted."""
    iteration, expected = want
    fresh = Job(root, init_seed=9, **settings)
    try:
        if same_tensors(expected, _state(fresh)):
            raise RuntimeError("the fresh job already holds the saved state: proves nothing")
        got_iteration = fresh.load(checkpointing_context=_context(fresh))
        got = _state(fresh)
    finally:
        fresh.close()
    verdict.check(f"{name}: resumed at local iteration {iteration}", got_iteration == iteration)
    verdict.check(f"{name}: weights and Adam state bit-exact", same_tensors(expected, got))
    verdict.check(f"{name}: weights on {device()}", devices_of(fresh.weights()) == [str(device())])


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _atomic(verdict: Verdict, scratch: Path, shown: list[str]) -> None:
    os.environ["CAIRN_NODE_RANK"] = "0"  # as a launcher sets it: this rank runs on node-0
    settings = _settings(scratch / "local" / "{node}", non_persistent_local_ckpt_algo="atomic")
    job = Job(scratch / "ckpt", init_seed=0, **settings)
    context = _context(job)
    job.step()
    job.save()
    job.step()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)
    expected = _state(job)
    job.close()
    held = _files(scratch / "local" / "node-0" / "0")
    verdict.check(
        "atomic: part and commit record in <dir>/node-0/0",
        held == ["iter_0000002_0_local.pt", "iter_0000002_local.commit.json"],
    )
    _resumed(verdict, "atomic", scratch / "ckpt", settings, (2, expected))
    shown.append(f"local 2 (newer than persistent 1) bit-exact on {device()}, from node-0's dir")


def _fully_parallel(verdict: Verdict, scratch: Path, shown: list[str]) -> None:
    node_dir = scratch / "node-volume"
    os.environ["CAIRN_LOCAL_DIR"] = str(node_dir)  # overrides the configured directory
    try:
        settings = _settings(scratch / "unused", non_persistent_local_ckpt_algo="fully_parallel")
        job = Job(scratch / "ckpt", init_seed=0, **settings)
        context = _context(job)
        for _ in range(3):
            job.step()
            if job.state.train_state.step >= 2:
                job.save(non_persistent_ckpt=True, checkpointing_context=context)
        expected = _state(job)
        job.close()
        held = _files(node_dir / "0")
        verdict.check(
            "fully_parallel: only iteration 3 kept, in CAIRN_LOCAL_DIR",
            held == ["iter_0000003_0_local.pt", "iter_0000003_local.commit.json"],
        )
        verdict.check(
            "fully_parallel: configured directory unused", not (scratch / "unused").exists()
        )
        _resumed(verdict, "fully_parallel", scratch / "ckpt", settings, (3, expected))
    finally:
        del os.environ["CAIRN_LOCAL_DIR"]
    shown.append(f"local 3 bit-exact on {device()} from CAIRN_LOCAL_DIR, 2 removed")


def _async(verdict: Verdict, scratch: Path, shown: list[str]) -> None:
    from cairn_agent import checkpointing

    settings = _settings(
        scratch / "local", non_persistent_local_ckpt_algo="fully_parallel", async_save=True
    )
    job = Job(scratch / "ckpt", init_seed=0, **settings)
    context = _context(job)
    for _ in range(2):
        job.step()
    checkpointing.save_checkpoint(
        job.state, [job.model], job.optimizer, None, 0.0,
        non_persistent_ckpt=True, checkpointing_context=context,
    )  # fmt: skip
    expected = _state(job)
    record = scratch / "local" / "0" / "iter_0000002_local.commit.json"
    verdict.check("async: nothing committed when the save returns", not record.exists())
    job.step()  # training goes on (weights and Adam state change) while the part is written
    moved = not same_tensors(expected, _state(job))
    checkpointing.maybe_finalize_async_save(job.state, job.state.cfg.checkpoint, blocking=True)
    verdict.check("async: committed by maybe_finalize_async_save", record.exists())
    job.close()
    if not moved:
        raise RuntimeError("the step after the save changed nothing: the check proves nothing")
    _resumed(verdict, "async", scratch / "ckpt", settings, (2, expected))
    shown.append(f"step 2 bit-exact on {device()} though step 3 ran during the write")


def _replication(verdict: Verdict, scratch: Path, shown: list[str]) -> None:
    settings = _settings(
        scratch / "local",
        non_persistent_local_ckpt_algo="fully_parallel",
        replication=True,
        replication_factor=1,
    )
    job = Job(scratch / "ckpt", init_seed=0, **settings)
    context = _context(job)
    job.step()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)
    expected = _state(job)
    job.close()
    held = _files(scratch / "local" / "0")
    verdict.check(
        "replication (factor 1): one copy of the one part",
        held == ["iter_0000001_0_local.pt", "iter_0000001_local.commit.json"],
    )
    _resumed(verdict, "replication (factor 1)", scratch / "ckpt", settings, (1, expected))
    two = Job(scratch / "ckpt2", init_seed=0, **{**settings, "replication_factor": 2})
    try:
        _context(two)
        refusal = "accepted"
    except ValueError as exc:
        refusal = str(exc)
    verdict.check(
        "replication_factor=2 on one rank: refused, naming replication_factor",
        "replication_factor" in refusal and refusal != "accepted",
    )
    shown.append(f"factor 1 (one copy, no clique) bit-exact on {device()}, factor 2 refused")


def _exchange(verdict: Verdict, scratch: Path, shown: list[str]) -> None:
    import torch.distributed as dist
    from cairn_agent.local.exchange import GroupExchange, to_state_dict
    from megatron.core.dist_checkpointing.mapping import ShardedTensor
    from megatron.core.dist_checkpointing.tensor_aware_state_dict import (
        MCoreTensorAwareStateDict,
    )

    def sharded(values: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"model": {k: ShardedTensor.from_rank_offsets(k, v) for k, v in values.items()}}

    values = {"w": randn((256, 128), 5), "h": randn((64, 8), 6, torch.bfloat16)}
    part, _ = MCoreTensorAwareStateDict.from_state_dict(sharded(values), algo="atomic")
    world = dist.group.WORLD
    if world is None:
        raise RuntimeError("no default process group")
    exchange = GroupExchange(world)
    gathered = exchange.all_gather_parts(part)
    verdict.check(f"exchange: packed on {device()}", exchange.device == device())
    verdict.check("exchange: one part per clique member", len(gathered) == 1)
    template = sharded({k: torch.zeros_like(v) for k, v in values.items()})
    got = to_state_dict(gathered[0], template, "atomic", None)["model"]
    verdict.check("exchange: tensors bit-exact", same_tensors(values, dict(got)))
    shown.append(f"{sum(v.nbytes for v in values.values())} bytes packed on {exchange.device}")


PARTS = {
    "atomic": _atomic,
    "fully_parallel": _fully_parallel,
    "async": _async,
    "replication": _replication,
    "exchange": _exchange,
}


def run(verdict: Verdict, scratch: Path) -> None:
    from cairn_agent import checkpointing  # noqa: F401 - its imports are not any part's time

    verdict.figures["device"] = str(device())
    os.environ.pop("CAIRN_LOCAL_DIR", None)  # the parts say where each node's directory is
    for name, part in PARTS.items():
        with bounded(verdict, name, bound_s(BOUNDS_S[name])) as shown:
            part(verdict, scratch / name, shown)
    verdict.skip(
        "replicas on another rank or node, retrieval from a peer after a node loss, "
        "fully_parallel shards moving between ranks",
        "one rank (world size 1; NCCL refuses two ranks on one GPU); tests/local/ covers them "
        "on CPU with 4 gloo ranks as 2 nodes",
    )
