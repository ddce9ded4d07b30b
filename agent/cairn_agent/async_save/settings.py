"""How the async writer process yields to training: applying ``config.WriterSettings`` to itself.

The worker writes while training computes. On a node where every core runs training threads,
the writer must lose every contest for a core or the disk queue (``nice``, ``io_priority``);
where cores are spare it can be kept off the training cores altogether (``cpu_affinity``).
Applied by the worker to itself at start (``apply_to_self``), so nothing needs privileges:
lowering one's own priority is always allowed.
"""

from __future__ import annotations

import logging
import os

from cairn_agent.config import CpuAffinity, IoPriority, WriterSettings

log = logging.getLogger(__name__)


def apply_to_self(nice: int, io_priority: str, cores: tuple[int, ...] | None) -> None:
    """Lower this process's CPU and I/O priority and pin it (the worker calls it at start)."""
    if nice:
        os.nice(nice)
    if io_priority != "normal":
        _set_io_priority(io_priority)
    if cores:
        os.sched_setaffinity(0, cores)


def _set_io_priority(io_priority: str) -> None:
    import psutil

    process = psutil.Process()
    try:
        if io_priority == "idle":
            process.ionice(psutil.IOPRIO_CLASS_IDLE)
        else:
            process.ionice(psutil.IOPRIO_CLASS_BE, 7)
    except (OSError, psutil.Error) as exc:
        # Tolerated: a kernel or container without I/O priorities still gets correct saves.
        log.warning("could not set the writer's I/O priority to %s: %s", io_priority, exc)


__all__ = ["CpuAffinity", "IoPriority", "WriterSettings", "apply_to_self"]
