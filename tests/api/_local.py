"""Rank body: node-local non-persistent checkpoints (nvidia-resiliency-ext, atomic algo, CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn_agent.engine import dist

from tests.api._workload import Job


def local_resume(rank: int, root: Path, local_dir: Path) -> dict[str, Any]:
    """Persistent save at step 1, local save at step 2; a fresh job resumes from the local one."""
    from cairn_agent import checkpointing

    settings: dict[str, Any] = {
        "save": str(root),
        "load": str(root),
        "non_persistent_ckpt_type": "local",
        "non_persistent_local_ckpt_dir": str(local_dir),
        "non_persistent_local_ckpt_algo": "atomic",
    }
    job = Job(rank, 0, **settings)
    context = checkpointing.init_checkpointing_context(job.state.cfg.checkpoint)
    job.step()
    job.save()  # persistent, iteration 1
    job.step()
    job.save(non_persistent_ckpt=True, checkpointing_context=context)  # local, iteration 2
    expected = job.params()
    dist.barrier()

    fresh = Job(rank, 9, **settings)
    fresh_context = checkpointing.init_checkpointing_context(fresh.state.cfg.checkpoint)
    iteration, flops = fresh.load(checkpointing_context=fresh_context)
    return {
        "resumed": (iteration, flops, fresh.state.train_state.consumed_train_samples),
        "same_params": all(v.equal(expected[k]) for k, v in fresh.params().items()),
        "adam_steps": [s["step"].item() for s in fresh.optimizer.state.values()],
    }


def global_non_persistent_resume(rank: int, root: Path) -> dict[str, Any]:
    """Persistent save at step 1, global non-persistent saves at 2-4 (two kept); resume wins 4."""
    from cairn_agent.storage.listing import committed_iterations

    settings: dict[str, Any] = {
        "save": str(root),
        "load": str(root),
        "non_persistent_ckpt_type": "global",
    }
    job = Job(rank, 0, **settings)
    job.step()
    job.save()
    for _ in range(3):
        job.step()
        job.save(non_persistent_ckpt=True)
    fresh = Job(rank, 9, **settings)
    return {
        "persistent": committed_iterations(root),
        "non_persistent": committed_iterations(root / "non_persistent"),
        "resumed": fresh.load(),
        "same_params": all(v.equal(job.params()[k]) for k, v in fresh.params().items()),
    }
