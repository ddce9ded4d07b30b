"""Rank bodies: a training loop that gets SIGTERM at a chosen step (every rank, or one)."""

from __future__ import annotations

import os
import signal
from typing import Any

import torch

from tests.api._bodies import pack
from tests.api._workload import Job


def _snapshot(job: Job) -> dict[str, Any]:
    adam = [
        [job.optimizer.state[p][k].clone() for k in ("step", "exp_avg", "exp_avg_sq")]
        for p in job.model.parameters()
    ]
    return {"params": job.params(), "adam": adam, "rng": torch.get_rng_state().clone()}


def train_until_sigterm(
    rank: int,
    world: int,
    root: str,
    env: dict[str, str],
    signal_at: int,
    signalled: list[int],
    ckpt: dict[str, Any],
) -> bytes:
    """Train with save_due; ranks in ``signalled`` SIGTERM themselves after step ``signal_at``.

    Returns what the rank saw when Cairn stopped it: the step, the exit code, its message and
    its model/optimizer/RNG state at that moment.
    """
    from cairn_agent import checkpointing
    from cairn_agent.errors import PreemptedExit

    os.environ.update(env)
    job = Job(rank, 0, save=root, load=root, save_on_sigterm=True, **ckpt)
    job.load()
    try:
        for _ in range(100):
            job.step()
            if job.state.train_state.step == signal_at and rank in signalled:
                os.kill(os.getpid(), signal.SIGTERM)  # delivered now, acted on at the boundary
            if checkpointing.save_due(job.state).persistent:
                job.save()
            checkpointing.maybe_finalize_async_save(job.state, job.state.cfg.checkpoint)
    except PreemptedExit as stop:
        return pack(
            {
                "step": job.state.train_state.step,
                "code": stop.code,
                "message": str(stop),
                **_snapshot(job),
            }
        )
    return pack({"step": job.state.train_state.step, "code": None, "message": "", **_snapshot(job)})


def resume(rank: int, world: int, root: str) -> bytes:
    """A fresh job resumes from ``root``: what it resumed and its state right after the load."""
    job = Job(rank, 1, load=root)
    iteration, _ = job.load()
    return pack({"iteration": iteration, **_snapshot(job)})
