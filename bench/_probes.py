"""Measurement probes shared by the benchmark methods and their rank launcher (no cycle:
``_methods`` and ``_ranks`` both import this module, and only ``_ranks`` imports ``_methods``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (e.g. ``VmHWM``, ``VmRSS``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


DISK_SETTLE_S = 3.0
"""Seconds a timed write waits after files were deleted. On this project's benchmark machine
(ext4 mounted with ``discard`` on a virtual disk) a 1 GiB fsync'ed write that starts within
~1-2 s of deleting a just-written file runs about twice as fast as one that starts later
(0.74-0.87 s against 1.7-2.3 s; 2 s after the delete it is already the slow case), so a method
that happened to write right after a cleanup would look twice as fast as its peer."""


def settle_disk() -> None:
    """Put the disk in its steady state before a timed write: nothing deleted in the last
    ``DISK_SETTLE_S`` seconds, nothing dirty."""
    os.sync()
    time.sleep(DISK_SETTLE_S)


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (no root needed), after making them durable."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_under(directory: Path) -> list[Path]:
    return [p for p in Path(directory).rglob("*") if p.is_file()]


def probe_rate(keep_going: Any, max_s: float = 60.0, min_s: float = 0.0) -> float:
    """Matmuls per second of a 256x256 loop, run while ``keep_going()`` (at least ``min_s``)."""
    import torch

    a = torch.rand(256, 256, generator=torch.Generator().manual_seed(0))
    count, start = 0, time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= max_s or (elapsed >= min_s and not keep_going()):
            break
        chunk_end = time.perf_counter() + 0.05
        while time.perf_counter() < chunk_end:
            a @ a
            count += 1
    return count / max(time.perf_counter() - start, 1e-9)
