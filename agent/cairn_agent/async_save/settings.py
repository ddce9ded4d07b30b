"""How the async writer process yields to training: CPU priority, I/O priority, CPU affinity.

The worker writes while training computes. On a node where every core runs training threads,
the writer must lose every contest for a core or the disk queue (``nice``, ``io_priority``);
where cores are spare it can be kept off the training cores altogether (``cpu_affinity``).
Applied by the worker to itself at start (``apply_to_self``), so nothing needs privileges:
lowering one's own priority is always allowed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

IoPriority = Literal["idle", "low", "normal"]
"""``idle``: the disk serves the writer only when nobody else asks (CFQ/BFQ idle class);
``low``: best-effort class at its lowest level; ``normal``: unchanged."""
CpuAffinity = Literal["auto", "inherit"]
_IO_PRIORITIES = ("idle", "low", "normal")


@dataclass(frozen=True, kw_only=True)
class WriterSettings:
    """Priority and placement of one rank's async writer process."""

    nice: int = 10
    """Added CPU niceness (0..19): the writer loses to training threads for a core."""
    io_priority: IoPriority = "low"
    """I/O scheduling class of the writer (``idle``, ``low`` or ``normal``)."""
    cpu_affinity: CpuAffinity | tuple[int, ...] = "auto"
    """``auto``: pin the writer to cores beyond those training threads need, when there are
    any (otherwise ``inherit``); ``inherit``: the training process's cores; or explicit core
    ids, each one this process may run on."""

    def __post_init__(self) -> None:
        valid_int = isinstance(self.nice, int) and not isinstance(self.nice, bool)
        if not valid_int or not 0 <= self.nice <= 19:
            raise ValueError(
                f"WriterSettings.nice={self.nice!r}: use an int in 0..19 (a process may only "
                "lower its own priority; 10 is the default)"
            )
        if self.io_priority not in _IO_PRIORITIES:
            raise ValueError(
                f"WriterSettings.io_priority={self.io_priority!r}: use one of {_IO_PRIORITIES}"
            )
        if isinstance(self.cpu_affinity, str):
            if self.cpu_affinity not in ("auto", "inherit"):
                raise ValueError(
                    f"WriterSettings.cpu_affinity={self.cpu_affinity!r}: use 'auto', 'inherit' "
                    "or a tuple of core ids"
                )
            return
        _check_cores(tuple(self.cpu_affinity))

    def worker_cores(self, training_threads: int, local_ranks: int) -> tuple[int, ...] | None:
        """The cores the writer should run on, or None to inherit the training process's."""
        if self.cpu_affinity == "inherit":
            return None
        if isinstance(self.cpu_affinity, tuple):
            return self.cpu_affinity
        allowed = sorted(os.sched_getaffinity(0))
        spare = allowed[training_threads * local_ranks :]
        # Every local rank's writer shares the spare cores: writes are mostly waits on the
        # disk, so one spare core keeps up with several writers.
        return tuple(spare) or None


def _check_cores(cores: tuple[int, ...]) -> None:
    allowed = os.sched_getaffinity(0)
    if not cores or any(isinstance(c, bool) or not isinstance(c, int) for c in cores):
        raise ValueError(
            f"WriterSettings.cpu_affinity={cores!r}: give a non-empty tuple of int core ids, "
            "'auto' or 'inherit'"
        )
    outside = sorted(set(cores) - allowed)
    if outside:
        raise ValueError(
            f"WriterSettings.cpu_affinity: cores {outside} are not available to this process "
            f"(allowed: {sorted(allowed)}); pick cores from that set or use 'auto'"
        )


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
