"""Durable file I/O: the one seam every durability-relevant call goes through.

``DurableIO`` groups the operations whose order makes a checkpoint crash-safe (write, fsync of a
file, fsync of a directory, rename, replace, recursive removal). Production code uses
``DEFAULT_IO``; tests pass a subclass that records the order of calls or fails on purpose, so the
commit protocol can be checked without monkeypatching. Torch-free.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
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


def atomic_write_json(path: Path, obj: object, io: DurableIO = DEFAULT_IO) -> None:
    """``atomic_write_bytes`` of ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", io)


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
