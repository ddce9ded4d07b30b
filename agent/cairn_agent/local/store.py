"""One rank's node-local directory: checkpoint parts, their checksums and commit records.

Layout (nvidia-resiliency-ext's, plus one Cairn file per committed iteration)::

    <node dir>/<rank>/iter_0000040_<origin>_local.pt        one part per origin rank it holds
    <node dir>/<rank>/iter_0000040_<origin>_local.dirty.pt  a part being written
    <node dir>/<rank>/iter_0000040_local.commit.json        what this rank committed for 40

Life of a part: written as ``.dirty`` with an exclusive create while its checksum is computed
from the bytes as they go out, renamed to its final name, and listed (size and checksum) in the
holder's commit record only after every rank of the job finished writing every part of the
iteration (``local.tier``). A part counts only when its holder's commit record lists it and
the bytes on disk still match: a part renamed but never committed, truncated or flipped is
invisible, so a crash at any step leaves the previous committed iteration as the newest.

Parts are not fsynced: the page cache survives a killed process, a crashed node loses its
directory to the replicas on other nodes anyway, and a torn file fails its checksum.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage.checksum import RunningChecksum
from cairn_agent.storage.durable import atomic_write_text
from cairn_agent.storage.manifest import FileEntry, describe_file

log = logging.getLogger(__name__)

RECORD_VERSION = 1
_RECORD_RE = re.compile(r"^iter_(\d{7,})_local\.commit\.json$")


def record_name(iteration: int) -> str:
    """File name of the commit record of ``iteration``."""
    return f"iter_{iteration:07d}_local.commit.json"


class Names(Protocol):
    """nvrx's part names (``_nvrx_compat.PartNames``)."""

    def file_name(self, iteration: int, origin: int, dirty: bool = False) -> str: ...

    def parse(self, name: str) -> tuple[int, int] | None: ...


class _ChecksummingWriter:
    """A binary file whose written bytes are checksummed on the way out."""

    def __init__(self, handle: io.BufferedWriter) -> None:
        self._handle = handle
        self.running = RunningChecksum()

    def write(self, data: bytes | memoryview) -> int:
        self.running.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


@dataclass
class PartStore:
    """Parts and commit records under one rank directory."""

    directory: Path
    names: Names
    written: dict[int, dict[int, FileEntry]] = field(default_factory=dict)
    """Iteration -> origin -> entry of the parts this process wrote, not yet committed."""
    problems: list[str] = field(default_factory=list)
    """Copies found unusable by the last ``committed_parts`` (e.g. a checksum mismatch)."""
    _verified: dict[tuple[str, int, int, int], bool] = field(default_factory=dict)

    # --- writing --------------------------------------------------------------------------
    def write_part(self, iteration: int, origin: int, part: Any) -> FileEntry:
        """Write ``part`` dirty, checksumming it, then rename it to its final name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        dirty = self.directory / self.names.file_name(iteration, origin, dirty=True)
        final = self.directory / self.names.file_name(iteration, origin)
        with open(dirty, "xb") as handle:  # exclusive: two writers of one name is a bug
            writer = _ChecksummingWriter(handle)
            torch.save(part, writer)  # type: ignore[arg-type]
        os.rename(dirty, final)
        entry = FileEntry(writer.running.size, writer.running.hexdigest(), writer.running.algorithm)
        self.written.setdefault(iteration, {})[origin] = entry
        return entry

    def commit(self, iteration: int, details: dict[str, Any]) -> None:
        """Durably record the parts of ``iteration`` this process wrote (no-op if none)."""
        parts = self.written.pop(iteration, {})
        if not parts:
            return
        record = {
            "version": RECORD_VERSION,
            "iteration": iteration,
            "committedAt": time.time(),
            "parts": {str(origin): entry.to_dict() for origin, entry in sorted(parts.items())},
            **details,
        }
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        atomic_write_text(self.directory / record_name(iteration), text)

    # --- reading ----------------------------------------------------------------------------
    def records(self) -> dict[int, dict[int, FileEntry]]:
        """Iteration -> origin -> entry, from every readable commit record."""
        found: dict[int, dict[int, FileEntry]] = {}
        for path in self._children():
            match = _RECORD_RE.match(path.name)
            if match is None:
                continue
            parts = self._read_record(path)
            if parts is not None:
                found[int(match.group(1))] = parts
        return found

    def committed_parts(self, origins: Iterable[int] | None) -> list[tuple[int, int]]:
        """``(iteration, origin)`` of every committed part whose bytes verify."""
        self.problems = []
        allowed = None if origins is None else set(origins)
        usable: list[tuple[int, int]] = []
        for iteration, parts in sorted(self.records().items()):
            for origin, entry in sorted(parts.items()):
                if allowed is not None and origin not in allowed:
                    continue
                if self._intact(iteration, origin, entry):
                    usable.append((iteration, origin))
        return usable

    def read_part(self, iteration: int, origin: int) -> Any:
        """The part, from bytes that match its commit record; ``CheckpointCorruptError`` if not."""
        path = self.directory / self.names.file_name(iteration, origin)
        entry = self.records().get(iteration, {}).get(origin)
        if entry is None:
            raise CheckpointCorruptError(path, "no commit record lists this part")
        data = _read_verified(path, entry)
        return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")

    def usage(self) -> tuple[int, int]:
        """``(files, bytes)`` of the parts in the directory (committed or not)."""
        sizes = [p.stat().st_size for p in self._children() if p.name.endswith("_local.pt")]
        return len(sizes), sum(sizes)

    # --- removing -----------------------------------------------------------------------------
    def remove_older(self, iteration: int) -> None:
        """Remove every part and record of iterations before ``iteration``."""
        self._remove(lambda it: it < iteration)

    def remove_iteration(self, iteration: int) -> None:
        """Remove the parts and record of ``iteration`` (a failed save)."""
        self.written.pop(iteration, None)
        self._remove(lambda it: it == iteration)

    def prepare(self, iteration: int) -> list[int]:
        """Before saving ``iteration``: drop what no resume may use; returns the dropped iterations.

        Kept: the newest committed iteration older than ``iteration``. Dropped: dirty files,
        parts never committed, older committed iterations, and anything at or after
        ``iteration`` (the rest of an abandoned run after a resume from further back, which a
        later resume must never jump to).
        """
        committed = [it for it in self.records() if it < iteration]
        keep = max(committed, default=None)
        dropped = sorted({it for it in self._iterations() if it != keep} | self._dirty_iterations())
        self.written.clear()
        self._remove(lambda it: it != keep)
        return dropped

    # --- helpers ------------------------------------------------------------------------------
    def _children(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []

    def _iteration_of(self, name: str) -> int | None:
        parsed = self.names.parse(name) or self._parse_dirty(name)
        if parsed is not None:
            return parsed[0]
        match = _RECORD_RE.match(name)
        return int(match.group(1)) if match else None

    def _parse_dirty(self, name: str) -> tuple[int, int] | None:
        if not name.endswith("_local.dirty.pt"):
            return None
        return self.names.parse(name.replace("_local.dirty.pt", "_local.pt"))

    def _iterations(self) -> set[int]:
        found = (self._iteration_of(p.name) for p in self._children())
        return {it for it in found if it is not None}

    def _dirty_iterations(self) -> set[int]:
        found = (self._parse_dirty(p.name) for p in self._children())
        return {parsed[0] for parsed in found if parsed is not None}

    def _remove(self, doomed: Callable[[int], bool]) -> None:
        # Records first: a record naming a removed part would make a half-removed iteration
        # look committed to a reader that runs between the two unlinks. Dirty files always go:
        # no write is in flight while the directory is tidied.
        children = sorted(self._children(), key=lambda p: _RECORD_RE.match(p.name) is None)
        for path in children:
            iteration = self._iteration_of(path.name)
            is_dirty = self._parse_dirty(path.name) is not None
            if iteration is None or not (doomed(iteration) or is_dirty):
                continue
            log.info("removing local checkpoint file %s", path)
            path.unlink(missing_ok=True)

    def _read_record(self, path: Path) -> dict[int, FileEntry] | None:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            return {int(k): FileEntry.from_dict(v) for k, v in obj["parts"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"{path}: unreadable commit record ({exc})")
            return None

    def _intact(self, iteration: int, origin: int, entry: FileEntry) -> bool:
        path = self.directory / self.names.file_name(iteration, origin)
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.problems.append(f"{path}: listed in its commit record but missing")
            return False
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key not in self._verified:
            self._verified[key] = describe_file(path, entry.algorithm) == entry
        if not self._verified[key]:
            self.problems.append(
                f"{path}: {entry.algorithm} or size does not match its commit record "
                "(contents changed)"
            )
        return self._verified[key]


def _read_verified(path: Path, entry: FileEntry) -> bytes:
    # One read: the bytes checksummed are the bytes unpickled (no window for a change between).
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointCorruptError(path, "local checkpoint part is missing") from exc
    running = RunningChecksum(entry.algorithm)
    running.update(data)
    if running.size != entry.size or running.hexdigest() != entry.checksum:
        raise CheckpointCorruptError(
            path,
            f"{entry.algorithm} is {running.hexdigest()} over {running.size} bytes, its commit "
            f"record says {entry.checksum} over {entry.size} (contents changed)",
        )
    return data
