"""The Megatron tracker file ``latest_checkpointed_iteration.txt``.

Format (Megatron-LM and Megatron-Bridge): the iteration in ASCII decimal digits without a
newline, or the literal ``release``. Megatron's reader strips surrounding whitespace, so a
trailing newline written by hand is accepted here too; anything else is rejected with a
``TrackerCorruptError`` that names the file, what is wrong and what to do (Megatron itself
calls ``sys.exit()`` with status 0 on garbage). Unlike Megatron, the write is atomic.
Torch-free.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cairn_agent.errors import TrackerCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, atomic_write_bytes

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")
_FIX_HINT = (
    "rewrite it with the iteration of a committed checkpoint (`cairn inspect <root>` lists "
    "them) or delete it to resume from the newest committed checkpoint"
)
# A tracker is a few bytes; anything much larger is not a tracker.
_MAX_TRACKER_BYTES = 64


@dataclass(frozen=True)
class TrackerValue:
    """What the tracker says to load."""

    iteration: int
    """The iteration; 0 when ``release`` is set (Megatron's convention)."""
    release: bool
    """True when the tracker reads ``release`` (load ``<root>/release``)."""


def resolve_tracker_path(path: str | Path) -> Path:
    """The tracker file for a checkpoint root, or ``path`` itself when it names a file."""
    path = Path(path)
    return layout.tracker_path(path) if path.is_dir() else path


def read_tracker(path: str | Path) -> TrackerValue | None:
    """Parse the tracker of a checkpoint root (or the tracker file itself); None if absent."""
    file = resolve_tracker_path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise TrackerCorruptError(file, f"is a directory, not a file; {_FIX_HINT}") from exc
    return parse_tracker_bytes(raw, file)


def parse_tracker_bytes(raw: bytes, source: Path) -> TrackerValue:
    """Parse tracker contents; ``source`` only names the file in errors."""
    text = _decode(raw, source)
    value = text.strip()
    if not value:
        what = "is empty" if not text else "contains only whitespace"
        raise TrackerCorruptError(source, f"{what} (a save was interrupted?); {_FIX_HINT}")
    if value == layout.RELEASE_NAME:
        return TrackerValue(iteration=0, release=True)
    if value.startswith("-") and _DIGITS.fullmatch(value[1:]):
        raise TrackerCorruptError(source, f"holds a negative iteration {value!r}; {_FIX_HINT}")
    if not _DIGITS.fullmatch(value):
        raise TrackerCorruptError(
            source, f"holds {value!r}, expected decimal digits or 'release'; {_FIX_HINT}"
        )
    return TrackerValue(iteration=int(value), release=False)


def _decode(raw: bytes, source: Path) -> str:
    if len(raw) > _MAX_TRACKER_BYTES:
        raise TrackerCorruptError(
            source, f"is {len(raw)} bytes long, not an iteration number; {_FIX_HINT}"
        )
    if b"\x00" in raw:
        raise TrackerCorruptError(
            source, f"contains NUL bytes {raw!r} (truncated or partially written); {_FIX_HINT}"
        )
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise TrackerCorruptError(source, f"is not ASCII text ({raw!r}); {_FIX_HINT}") from exc


def tracker_bytes(iteration: int, release: bool = False) -> bytes:
    """The exact bytes Megatron writes: ``release`` or the decimal iteration, no newline."""
    if release:
        return layout.RELEASE_NAME.encode("ascii")
    if iteration < 0:
        raise ValueError(f"tracker iteration must be non-negative, got {iteration}")
    return str(iteration).encode("ascii")


def write_tracker(
    root: str | Path, iteration: int, release: bool = False, io: DurableIO = DEFAULT_IO
) -> None:
    """Atomically point the tracker of ``root`` at ``iteration`` (or ``release``).

    temp file, flush, fsync, ``os.replace``, fsync of the root: a crash leaves the old or the
    new value, never an empty or partial file.
    """
    data = tracker_bytes(iteration, release)
    atomic_write_bytes(layout.tracker_path(root), data, io)
    log.info("tracker of %s now points at %s", root, data.decode("ascii"))
