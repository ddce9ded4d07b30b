"""DCP's file writer with every file checksummed as it is written and its writeback started early.

The manifest needs a checksum of every file. Computing it here, on each buffer as it is handed
to the kernel, costs one pass over bytes that are already in the CPU cache; reading the files
back afterwards would cost a second pass over memory or disk. The same stream also starts the
kernel's writeback every ``writeback_bytes`` (``storage.durable.start_writeback``) so the disk
works while the writer still produces bytes and the final fsync has little left to do.

It also keeps ``torch.save`` from computing the zip format's own CRC-32 of every record
(``torch.serialization.set_crc32_options``, per thread) while a file's items are written: that
is a second inline pass over every byte, on one core, for a checksum nothing reads
(``torch.load`` does not check it; the manifest's CRC32C covers every byte of the file).
Profiled on 1 GiB it cost ~0.3 s of a ~0.9 s write. Tools that test zip CRCs (``unzip -t``)
report mismatches on these files; ``cairn verify --deep`` is the check for Cairn's files.

Used by the sync engine (``sharded``) and by the async worker (``async_save.writer``): both
write the same DCP files. Imports torch's DCP file system only, never megatron-core.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.serialization
from torch.distributed.checkpoint.filesystem import FileSystem, FileSystemWriter

from cairn_agent.storage.checksum import DEFAULT_ALGORITHM, ChecksumAlgorithm, RunningChecksum
from cairn_agent.storage.durable import start_writeback
from cairn_agent.storage.manifest import FileEntry

WRITE_BUFFER_BYTES = 8 << 20
"""User-space buffer for the small writes of DCP's framing; tensor data bypasses it."""
WRITEBACK_BYTES = 64 << 20
"""Start writeback after this many new bytes (large enough for sequential disk writes)."""


class ChecksumStream(io.BufferedWriter):
    """A buffered file that checksums everything written and starts writeback as it goes."""

    def __init__(
        self, path: Path, algorithm: ChecksumAlgorithm, writeback_bytes: int = WRITEBACK_BYTES
    ) -> None:
        super().__init__(io.FileIO(path, "wb"), buffer_size=WRITE_BUFFER_BYTES)
        self.checksum = RunningChecksum(algorithm)
        self._writeback_bytes = writeback_bytes
        self._written_back = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = super().write(view)
        self.checksum.update(view)
        if self.checksum.size - self._written_back >= self._writeback_bytes:
            self._start_writeback()
        return written

    def _start_writeback(self) -> None:
        # Only what already reached the kernel: the buffered tail follows at the next call.
        reached = self.raw.tell()
        start_writeback(self.fileno(), self._written_back, reached - self._written_back)
        self._written_back = reached

    def entry(self) -> FileEntry:
        return FileEntry(self.checksum.size, self.checksum.hexdigest(), self.checksum.algorithm)


class ChecksumFileSystem(FileSystem):
    """DCP's local file system, recording a ``FileEntry`` per file it creates (by base name)."""

    def __init__(self, algorithm: ChecksumAlgorithm = DEFAULT_ALGORITHM) -> None:
        super().__init__()
        self.algorithm = algorithm
        self.entries: dict[str, FileEntry] = {}
        self._lock = threading.Lock()

    @contextmanager
    def create_stream(self, path: str | Any, mode: str) -> Generator[io.IOBase, None, None]:
        if mode != "wb":
            with super().create_stream(path, mode) as stream:
                yield stream
            return
        stream = ChecksumStream(Path(path), self.algorithm)
        try:
            # DCP torch.saves every item of this file inside this block, on this thread.
            with without_zip_crc():
                yield stream
        finally:
            stream.close()
        with self._lock:
            self.entries[Path(path).name] = stream.entry()

    def rename(self, path: str | Any, new_path: str | Any) -> None:
        # DCP writes ``.metadata`` as a temp file and renames it: the entry follows the file.
        super().rename(path, new_path)
        with self._lock:
            entry = self.entries.pop(Path(path).name, None)
            if entry is not None:
                self.entries[Path(new_path).name] = entry


class ChecksumFileSystemWriter(FileSystemWriter):
    """``FileSystemWriter`` whose files are checksummed as written (``entries`` after writing).

    Never fsyncs itself (``sync_files=False``): callers fsync every file of the save in one
    batch before reporting it written (``storage.durable.fsync_files``).
    """

    def __init__(self, path: Path, *, thread_count: int = 1, **kwargs: Any) -> None:
        super().__init__(path, thread_count=thread_count, sync_files=False, **kwargs)
        self.fs = self.checksum_fs = ChecksumFileSystem()

    @property
    def entries(self) -> dict[str, FileEntry]:
        """Base name -> entry of every file written so far."""
        return dict(self.checksum_fs.entries)


@contextmanager
def without_zip_crc() -> Generator[None, None, None]:
    """``torch.save`` on this thread skips the zip CRC-32 of its records inside this block.

    torch's serialization config is per thread (a ``ContextVar``), so other threads' saves,
    the user's included, keep their CRCs; DCP's writer threads each enter this block through
    ``create_stream``.
    """
    saved = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(saved)
