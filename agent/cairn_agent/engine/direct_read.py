"""Reading saved tensors straight into their destination tensors at load.

DCP's ``FileSystemReader`` loads every tensor item with ``torch.load`` from its slice of the
shard file into a fresh tensor and then copies it into the destination: the bytes cross memory
twice and ``torch.load`` builds a zip reader and an unpickler per item. What ``torch_dist``
writes for a ``ShardedTensor`` is one ``torch.save`` blob per item whose single storage is the
item's bytes, contiguous, from offset 0. For such an item this reader finds that storage's
record in the blob's own zip directory and reads it straight into the destination's memory, a
file's items in large requests over a few threads (one stream leaves the disk idle between
requests). Every other item (byte items, views, dtype or shape differences, non-CPU destinations,
transformed streams) goes through DCP's own path, so what loads is exactly what DCP would load.

megatron-core's load strategy builds its reader internally; ``_mcore_compat.read_through``
swaps this one in for the duration of a load.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core.dist_checkpointing.strategies.cached_metadata_filesystem_reader import (
    CachedMetadataFileSystemReader,
)
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.futures import Future

from cairn_agent.engine import _torch_compat

READ_THREADS = 4
"""Reader threads per rank. A cold read of one file on this project's benchmark disk gives 1.36
GiB/s to one sequential ``readinto`` and up to 1.88 GiB/s to 4 threads of 64 MiB requests, and
no more to 8 (``bench/read_parallelism.py``, medians of 3); the GIL is released while reading.
With two ranks reading at once the disk is the limit whatever the count: 1, 2 and 4 threads per
rank read 1 GiB apiece in 1.50 / 1.39 / 1.52 s in one run and 1.23 / 1.19 / 1.22 s in another
(medians of 4, interleaved), so the count is kept per rank rather than shared per node, where
faster storage (NVMe arrays) wants more requests in flight, not fewer."""
READ_REQUEST_BYTES = 64 << 20
"""Bytes per read request (large and sequential within each piece)."""


@dataclass(frozen=True)
class _Layout:
    """What a ``torch.save`` blob of one plain tensor says about its storage."""

    key: str
    dtype: torch.dtype
    storage_numel: int
    storage_offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    """A pickled storage class, by the dtype it stands for."""

    dtype: torch.dtype


class _Storage(tuple):  # type: ignore[type-arg]
    """The persistent id of a storage: (key, dtype, numel)."""


class _LayoutUnpickler(pickle.Unpickler):
    """Reads ``data.pkl`` of a plain tensor into a ``_Layout``; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            with warnings.catch_warnings():  # the legacy typed storage classes warn on use
                warnings.simplefilter("ignore", UserWarning)
                storage_type = getattr(torch, name, None)
                dtype = getattr(storage_type, "dtype", None)
            if isinstance(dtype, torch.dtype):
                return _StorageType(dtype)
        raise pickle.UnpicklingError(f"not a plain tensor: {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"not a storage: {kind!r}")
        return _Storage((str(key), storage_type.dtype, int(numel)))


def _rebuild(
    storage: _Storage,
    storage_offset: int,
    size: Sequence[int],
    stride: Sequence[int],
    requires_grad: bool,
    backward_hooks: Any,
    *metadata: Any,
) -> _Layout:
    if not isinstance(storage, _Storage) or backward_hooks or metadata:
        raise pickle.UnpicklingError("not a plain tensor")
    key, dtype, numel = storage
    return _Layout(key, dtype, numel, int(storage_offset), tuple(size), tuple(stride))


class _Window(io.RawIOBase):
    """The byte range [start, start+length) of an open file, as a seekable raw stream."""

    def __init__(self, raw: io.FileIO, start: int, length: int) -> None:
        super().__init__()
        self._raw, self._start, self._length, self._pos = raw, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._length - self._pos)
        done = _read_exactly(self._raw, view[:count], self._start + self._pos)
        self._pos += done
        return done


def _read_exactly(raw: io.FileIO, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        raw.seek(offset + done)
        got = raw.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _storage_record(window: _Window, target: torch.Tensor) -> tuple[int, int] | None:
    """(offset in the blob, bytes) of the storage to read into ``target``; None unless the blob
    holds one plain, contiguous tensor of ``target``'s dtype and shape from offset 0."""
    reader = _torch_compat.PyTorchFileReader(window)  # type: ignore[call-overload]
    if reader.has_record("byteorder") and reader.get_record("byteorder") != sys.byteorder.encode():
        return None
    try:
        layout = _LayoutUnpickler(io.BytesIO(reader.get_record("data.pkl"))).load()
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        return None
    if not isinstance(layout, _Layout):
        return None
    nbytes = target.numel() * target.element_size()
    plain = (
        layout.dtype == target.dtype
        and layout.size == tuple(target.shape)
        and layout.storage_offset == 0
        and layout.storage_numel == target.numel()
        and (target.numel() <= 1 or layout.stride == _contiguous_strides(layout.size))
    )
    record = f"data/{layout.key}"
    if not plain or reader.get_record_size(record) != nbytes:
        return None
    return int(reader.get_record_offset(record)), nbytes


@dataclass(frozen=True)
class _Placed:
    """One item to read in place: its destination's bytes and where they lie in the file."""

    item: ReadItem
    destination: memoryview
    offset: int


def _read_pieces(path: Any, placed: list[_Placed]) -> None:
    """Read every placed item, in ``READ_REQUEST_BYTES`` pieces over ``READ_THREADS`` threads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = [
            (p.destination[start : start + READ_REQUEST_BYTES], p.offset + start)
            for p in placed
            for start in range(0, len(p.destination), READ_REQUEST_BYTES)
        ]
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="cairn-read") as pool:
            for (view, _), got in zip(
                pieces, pool.map(lambda piece: _pread_exactly(fd, *piece), pieces), strict=True
            ):
                if got != len(view):
                    raise OSError(f"{path}: short read ({got} of {len(view)} bytes)")
    finally:
        os.close(fd)


def _pread_exactly(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            break
        done += got
    return done


class DirectFileSystemReader(CachedMetadataFileSystemReader):  # type: ignore[misc]
    """megatron-core's caching DCP reader, with whole plain tensors read in place."""

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            path = self.storage_data[item.storage_index].relative_path
            per_file.setdefault(path, []).append(item)
        others: list[ReadItem] = []
        for relative_path, items in per_file.items():
            path = self.fs.concat_path(self.path, relative_path)
            placed: list[_Placed] = []
            with open(path, "rb", buffering=0) as raw:
                for item in items:
                    where = self._place(raw, item, planner)
                    if where is None:
                        others.append(item)
                    else:
                        placed.append(where)
            _read_pieces(path, placed)
            for where in placed:
                planner.commit_tensor(where.item, planner.resolve_tensor(where.item).detach())
        if others:
            rest: Future[None] = super().read_data(
                LoadPlan(others, plan.storage_data, plan.planner_data), planner
            )
            return rest
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _place(self, raw: io.FileIO, item: ReadItem, planner: LoadPlanner) -> _Placed | None:
        """Where ``item``'s bytes go and come from, when it can be read in place."""
        info = self.storage_data[item.storage_index]
        if item.type != LoadItemType.TENSOR or getattr(info, "transform_descriptors", None):
            return None
        if any(item.storage_offsets) or not isinstance(planner, DefaultLoadPlanner):
            return None
        # Judge the destination without ``resolve_tensor``: megatron-core's may stage an FP8
        # tensor that only a ``commit_tensor`` right after releases, and a refused item must
        # leave the planner as DCP's own path expects to find it. For a plain CPU tensor the
        # view below is the memory ``resolve_tensor`` returns.
        base = planner.lookup_tensor(item.dest_index)
        if type(base) is not torch.Tensor or base.device.type != "cpu":
            return None
        destination = planner.transform_tensor(item, base).detach()
        if not destination.is_contiguous() or tuple(item.lengths) != tuple(destination.shape):
            return None
        record = _storage_record(_Window(raw, info.offset, info.length), destination)
        if record is None:
            return None
        view = memoryview(destination.reshape(-1).view(torch.uint8).numpy())
        return _Placed(item, view, info.offset + record[0])
