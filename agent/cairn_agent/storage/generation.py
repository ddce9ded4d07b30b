"""The restart-generation fence of a checkpoint root (DESIGN.md §3 step 7).

Each restart of a training job gets a larger generation number. The coordinator of a new
generation records it in ``<root>/.cairn.generation`` before it saves; publishing the tracker
and deleting checkpoints first check that no newer generation has claimed the root, so a slow
writer of an older generation (a zombie pod) can never move the tracker or delete data.

Claims and the check-then-act of publish/delete hold an advisory ``flock`` on the root
directory, so a claim cannot slip in between a writer's check and its action on filesystems
that support it (local, NFSv4). Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from cairn_agent.errors import CheckpointCorruptError, StaleGenerationError
from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, atomic_write_bytes

log = logging.getLogger(__name__)

_UNSUPPORTED_LOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def read_generation(root: Path) -> int:
    """The generation recorded at ``root``; 0 if none was ever claimed."""
    path = layout.generation_path(root)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(path, f"unreadable generation file ({exc})") from exc
    if not text.isdigit():
        raise CheckpointCorruptError(
            path, f"holds {text!r}, expected a non-negative integer; delete it to reset the fence"
        )
    return int(text)


@contextlib.contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on the root directory (no-op where the filesystem has none)."""
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        _lock(fd, root)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _lock(fd: int, root: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED_LOCK_ERRNOS:
            raise
        # Tolerated: the fence check still runs, only the check-to-act window is unguarded.
        log.debug("no flock support on %s (%s); generation fence is check-then-act", root, exc)


def claim_generation(root: Path, generation: int, io: DurableIO = DEFAULT_IO) -> None:
    """Record ``generation`` as the current one of ``root`` (creating ``root`` if needed).

    Raises ``StaleGenerationError`` when a newer generation already claimed the root.
    Claiming the current generation again is a no-op.
    """
    if generation < 0:
        raise ValueError(f"generation must be non-negative, got {generation}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with root_lock(root):
        current = read_generation(root)
        if current > generation:
            raise StaleGenerationError(root, generation, current)
        if current == generation and layout.generation_path(root).exists():
            return
        atomic_write_bytes(layout.generation_path(root), str(generation).encode("ascii"), io)
    log.info("claimed restart generation %d of %s (was %d)", generation, root, current)


def ensure_current(root: Path, generation: int) -> None:
    """``StaleGenerationError`` if ``root`` records a generation newer than ``generation``."""
    current = read_generation(root)
    if current > generation:
        raise StaleGenerationError(root, generation, current)
