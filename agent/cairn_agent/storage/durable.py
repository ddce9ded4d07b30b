"""Durable file I/O: the one seam every durability-relevant call goes through.

``DurableIO`` groups the operations whose order makes a checkpoint crash-safe (write, fsync of a
file, fsync of a directory, rename, replace, recursive removal). Production code uses
``DEFAULT_IO``; tests pass a subclass that records the order of calls or fails on purpose, so the
commit protocol can be checked without monkeypatching. Torch-free.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cairn_agent.storage import layout

log = logging.getLogger(__name__)


class DurableIO:
    """Thin wrapper over the POSIX calls whose order matters for durability.

    Every method acts on exactly one path (or one pair for renames) and never fsyncs implicitly:
    callers state the order of writes, fsyncs and renames explicitly.
    """

    def write_file(self, path: Path, data: bytes) -> None:
        """Create or truncate ``path`` and write ``data`` (flushed to the OS, not fsync'ed)."""
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()

    def fsync_file(self, path: Path) -> None:
        """Make the contents of the regular file ``path`` durable."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of directory ``path`` (creations, renames, removals) durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        """``os.rename``: atomic on POSIX within one filesystem (fails for a non-empty dst dir)."""
        os.rename(src, dst)

    def replace(self, src: Path, dst: Path) -> None:
        """``os.replace``: atomically swap a file into place, overwriting ``dst``."""
        os.replace(src, dst)

    def exchange(self, a: Path, b: Path) -> None:
        """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

        Raises ``OSError`` with ``ENOSYS``/``EINVAL``/``EOPNOTSUPP`` where the kernel or the
        filesystem cannot; callers then fall back to two renames.
        """
        _renameat2_exchange(a, b)

    def remove_tree(self, path: Path) -> None:
        """Remove a directory tree or a file; a path that is already gone is not an error."""
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


DEFAULT_IO = DurableIO()


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
EXCHANGE_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def _renameat2_exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library", str(a))
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


_SYNC_FILE_RANGE_WRITE = 2
_LIBC = ctypes.CDLL(None, use_errno=True)
_SYNC_FILE_RANGE = getattr(_LIBC, "sync_file_range", None)
if _SYNC_FILE_RANGE is not None:
    _SYNC_FILE_RANGE.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk, now.

    Not a durability step (no metadata, no cache flush; ``fsync`` still follows): it keeps the
    disk busy while the writer is still producing bytes, instead of leaving every page dirty
    until one final ``fsync`` that then runs alone. Measured here, write + fsync of 1 GiB went
    from ~0.7-1.0 to ~1.5-2.5 GiB/s. A no-op where Linux's ``sync_file_range`` is missing.
    """
    if _SYNC_FILE_RANGE is not None and length > 0:
        # Errors are ignored on purpose: this is a hint, and the final fsync reports real ones.
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_files(paths: Iterable[Path], io: DurableIO = DEFAULT_IO, threads: int = 4) -> None:
    """fsync every file of ``paths``, several at a time (no order among them is needed).

    Files of one save need only be durable before the commit makes them visible, so their
    fsyncs are batched and overlapped rather than issued one after another.
    """
    todo = list(paths)
    if len(todo) <= 1 or threads <= 1:
        for path in todo:
            io.fsync_file(path)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(todo))) as pool:
        list(pool.map(io.fsync_file, todo))  # list() re-raises the first failure


def new_nonce() -> str:
    """Random hex suffix that keeps concurrent hidden names apart."""
    return secrets.token_hex(4)


def atomic_write_bytes(path: Path, data: bytes, io: DurableIO = DEFAULT_IO) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix.

    Order: write a hidden temp sibling (a name start-up GC recognises), fsync it, ``os.replace``
    it onto ``path``, then fsync the parent so the replacement itself survives a crash.
    """
    path = Path(path)
    tmp = path.parent / layout.atomic_tmp_name(path.name, new_nonce())
    try:
        io.write_file(tmp, data)
        io.fsync_file(tmp)
        io.replace(tmp, path)
    except BaseException:
        _discard_tmp(tmp)
        raise
    io.fsync_dir(path.parent)


def _discard_tmp(tmp: Path) -> None:
    # Best effort: the original error matters more, and start-up GC removes what is left.
    try:
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove temp file %s: %s", tmp, exc)


def atomic_write_text(path: Path, text: str, io: DurableIO = DEFAULT_IO) -> None:
    """``atomic_write_bytes`` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), io)


def fsync_tree(directory: Path, io: DurableIO = DEFAULT_IO) -> None:
    """fsync every regular file under ``directory``, then every directory bottom-up.

    Files first: a directory fsync only makes its entries durable, not the data they name.
    Directories bottom-up, ending with ``directory`` itself, so each parent is synced after
    its children's entries exist.
    """
    files: list[Path] = []
    dirs: list[Path] = []
    for current, _subdirs, names in os.walk(directory, topdown=False):
        files.extend(Path(current) / name for name in sorted(names))
        dirs.append(Path(current))
    for file in files:
        if not file.is_symlink():
            io.fsync_file(file)
    for each in dirs:
        io.fsync_dir(each)
