"""Rank body: saves and a resume with status reporting on (``CAIRN_CHECKPOINT`` set)."""

from __future__ import annotations

import os

from cairn_agent.cluster import reporting

from tests.api._workload import Job


def report_saves_and_resume(rank: int, world: int, root: str, env: dict[str, str]) -> bool:
    # Ranks start from a preloaded forkserver, whose environment predates the test's: the
    # pod environment (CAIRN_CHECKPOINT, KUBECONFIG) is handed over explicitly.
    os.environ.update(env)
    job = Job(rank, 0, save=root, load=root, most_recent_k=1)
    for _ in range(2):
        job.step()
        job.save()
    resumed = Job(rank, 1, load=root)
    resumed.load()
    flushed = True
    for state in (job.state, resumed.state):
        target = reporting.reporter(state)
        if target is not None:  # rank 0 only
            flushed = target.flush(timeout=30) and flushed
            target.close()
    return flushed


def resume_under_cluster_pin(rank: int, world: int, root: str, env: dict[str, str]) -> int:
    """Save iterations 1 and 2, then resume in a fresh job; returns the step it resumed at."""
    os.environ.update(env)
    job = Job(rank, 0, save=root, load=root)
    for _ in range(2):
        job.step()
        job.save()
    resumed = Job(rank, 1, load=root)
    iteration, _ = resumed.load()
    for state in (job.state, resumed.state):
        target = reporting.reporter(state)
        if target is not None:
            target.close()
    return iteration


def report_async_saves(rank: int, world: int, root: str, env: dict[str, str]) -> bool:
    """Two async saves with a finalize poll per step, then a blocking, terminating finalize."""
    from cairn_agent import checkpointing

    os.environ.update(env)
    job = Job(rank, 0, save=root, async_save=True, most_recent_k=2)
    ckpt = job.state.cfg.checkpoint
    checkpointing.init_async_checkpoint_worker(job.state)
    for _ in range(2):
        job.step()
        job.save()
        checkpointing.maybe_finalize_async_save(job.state, ckpt)
    checkpointing.maybe_finalize_async_save(job.state, ckpt, blocking=True, terminate=True)
    target = reporting.reporter(job.state)
    if target is None:  # not rank 0
        return True
    flushed = target.flush(timeout=30)
    target.close()
    return flushed
