"""Check 4: node-local checkpoints through nvidia-resiliency-ext, and replication.

- Seed API: a persistent save at step 1 and a local save (``non_persistent_ckpt=True``) at
  step 2; a fresh job with a fresh checkpointing context resumes from the local one,
  bit-exact, on the device. The ``fully_parallel`` algorithm on CUDA (what Bridge uses by
  default), ``atomic`` without (the other needs CUDA).
- CUDA only: an async local save (nvrx's ``AsyncRequest`` run by nvrx's ``AsyncCallsQueue``,
  which forks the writer after the device-to-host copy), loaded back bit-exact.
- CUDA only: replication on (nvrx ``CliqueReplicationStrategy``). With one GPU the world is
  one rank, so the clique is that rank alone (factor 1): the replication path runs (the
  hollow state dict and the tensor data are all-gathered over NCCL, the replica is written
  and loaded back) but nothing crosses to another rank.

What one GPU cannot show: a replica landing on another rank or node (factor >= 2 needs at
least two ranks, and NCCL refuses two ranks on one GPU), and a restarted rank whose node-local
directory is gone retrieving its checkpoint from a peer's replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpu._common import Verdict, device, devices_of, on_gpu, randn, same_tensors
from gpu._job import Job


def _seed_api(verdict: Verdict, scratch: Path, algo: str) -> None:
    from cairn_agent import checkpointing

    settings: dict[str, Any] = {
        "non_persistent_ckpt_type": "local",
        "non_persistent_local_ckpt_dir": str(scratch / "local"),
        "non_persistent_local_ckpt_algo": algo,
    }
    root = scratch / "persistent"
    job = Job(root, init_seed=0, **settings)
    context = checkpointing.init_checkpointing_context(job.state.cfg.checkpoint)
    job.step()
    job.save()
    job.step()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)
    expected = job.weights()

    fresh = Job(root, init_seed=9, **settings)
    fresh_context = checkpointing.init_checkpointing_context(fresh.state.cfg.checkpoint)
    name = f"seed API local save/resume ({algo})"
    verdict.check(
        f"{name}: resumed at the local iteration",
        fresh.load(checkpointing_context=fresh_context) == 2,
    )
    got = fresh.weights()
    verdict.check(f"{name}: weights bit-exact on {device()}", same_tensors(expected, got))
    verdict.check(f"{name}: weights on {device()}", devices_of(got) == [str(device())])


def _sharded(values: dict[str, torch.Tensor], iteration: int) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    return {
        "model": {k: ShardedTensor.from_rank_offsets(k, v) for k, v in values.items()},
        "iteration": iteration,
    }


def _values(seed: int) -> dict[str, torch.Tensor]:
    return {"w": randn((256, 128), seed), "h": randn((64, 8), seed + 1, torch.bfloat16)}


def _load_latest(config: Any, algo: str) -> tuple[int, dict[str, torch.Tensor]]:
    """A fresh context (a restarted process): newest local iteration and its tensors."""
    from cairn_agent import checkpointing
    from cairn_agent.local import nvrx

    context = checkpointing.init_checkpointing_context(config)
    iteration = nvrx.find_latest_local_iteration(context)
    template = _sharded({k: torch.zeros_like(v) for k, v in _values(0).items()}, -1)
    state, _ = nvrx.load_local_state_dict(context, template, algo=algo)
    return iteration, dict(state["model"])


def _config(scratch: Path, **extra: Any) -> Any:
    from cairn_agent.config import CheckpointConfig

    return CheckpointConfig(
        non_persistent_ckpt_type="local", non_persistent_local_ckpt_dir=str(scratch), **extra
    )


def _async_local(verdict: Verdict, scratch: Path) -> None:
    from cairn_agent import checkpointing
    from cairn_agent.local import nvrx
    from nvidia_resiliency_ext.checkpointing.async_ckpt.core import AsyncCallsQueue

    config = _config(scratch)
    context = checkpointing.init_checkpointing_context(config)
    request = nvrx.save_local_checkpoint(
        context, _sharded(_values(5), 5), 5, algo="fully_parallel", is_async=True
    )
    calls = AsyncCallsQueue(persistent=False)
    try:
        calls.schedule_async_request(request)
        calls.maybe_finalize_async_calls(blocking=True)
    finally:
        calls.close()
    iteration, got = _load_latest(config, "fully_parallel")
    verdict.check("async local save: newest local iteration", iteration == 5)
    verdict.check("async local save: tensors bit-exact", same_tensors(_values(5), got))


def _replicated(verdict: Verdict, scratch: Path) -> None:
    from cairn_agent import checkpointing
    from cairn_agent.local import nvrx

    config = _config(scratch, replication=True, replication_jump=1, replication_factor=1)
    context = checkpointing.init_checkpointing_context(config)
    nvrx.save_local_checkpoint(context, _sharded(_values(7), 7), 7, algo="fully_parallel")
    iteration, got = _load_latest(config, "fully_parallel")
    verdict.check("replication on (clique of 1): newest local iteration", iteration == 7)
    verdict.check("replication on (clique of 1): tensors bit-exact", same_tensors(_values(7), got))
    files = sorted(p.name for p in scratch.rglob("*") if p.is_file())
    verdict.figures["replicated_files"] = files


def run(verdict: Verdict, scratch: Path) -> None:
    verdict.figures["device"] = str(device())
    _seed_api(verdict, scratch / "seed", "fully_parallel" if on_gpu() else "atomic")
    if not on_gpu():
        for name in ("fully_parallel algorithm", "async local save", "replication"):
            verdict.skip(
                name, "no CUDA: nvidia-resiliency-ext/megatron-core need it (Cairn refuses)"
            )
        return
    _async_local(verdict, scratch / "async")
    _replicated(verdict, scratch / "replicated")
    verdict.skip(
        "replicas on other ranks or nodes, retrieval from a peer",
        "one GPU: world size 1, and NCCL refuses two ranks on one GPU",
    )
