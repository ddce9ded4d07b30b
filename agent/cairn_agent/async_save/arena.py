"""Reusable host staging buffers in shared memory, one arena per rank.

The blocking part of an async save is a copy of this rank's tensors into host memory the
worker can read. Allocating that memory on every save is what makes ``dcp.async_save`` block
4-6x longer than a memcpy (first-touch page faults), so the arena is allocated once, as one
file on tmpfs mapped by both the training process and its worker, and reused for as long as
the plan's tensor layout is unchanged.

Each tensor gets its own aligned slot and is viewed through ``torch.frombuffer``, so its
storage is exactly its bytes: ``torch.save`` (what DCP writes per item) then writes only the
slot, never the whole arena, and DCP does not clone it first.

The memory is an anonymous ``memfd`` (or a tmpfs file unlinked right after creation): it has
no name, the worker receives its file descriptor over the pipe, and the pages are freed when
the last mapping goes, so a killed job can never leave a shared-memory segment behind.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from cairn_agent.async_save.slots import SlotKey, TensorSlot

log = logging.getLogger(__name__)

_SHM_DIR = Path("/dev/shm")


def _anonymous_fd(size: int) -> int:
    """A file descriptor of ``size`` bytes of shareable memory that has no name."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("cairn-stage", os.MFD_CLOEXEC)
    else:
        # tmpfs keeps the pages in RAM; elsewhere the temp dir (page cache) still works.
        directory = _SHM_DIR if _SHM_DIR.is_dir() else Path(tempfile.gettempdir())
        path = directory / f"cairn-stage-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        path.unlink()
    os.ftruncate(fd, size)
    return fd


def slot_views(buffer: mmap.mmap, slots: Iterable[TensorSlot]) -> dict[SlotKey, torch.Tensor]:
    """A tensor over each slot of ``buffer`` whose storage is exactly that slot."""
    views: dict[SlotKey, torch.Tensor] = {}
    for slot in slots:
        numel = slot.nbytes // torch.empty((), dtype=slot.dtype).element_size()
        if numel == 0:  # frombuffer rejects empty views; an empty tensor has no bytes to share
            views[slot.key] = torch.empty(slot.shape, dtype=slot.dtype)
            continue
        flat = torch.frombuffer(buffer, dtype=slot.dtype, count=numel, offset=slot.offset)
        views[slot.key] = flat.view(slot.shape)
    return views


def arena_size(slots: Iterable[TensorSlot]) -> int:
    """Bytes an arena for ``slots`` needs (at least 1: mmap refuses empty files)."""
    return max([slot.offset + slot.nbytes for slot in slots] + [1])


class StagingArena:
    """One rank's staging buffer: created by the training process, mapped by its worker."""

    def __init__(self, slots: list[TensorSlot]) -> None:
        self.slots = list(slots)
        self.size = arena_size(self.slots)
        self.fd = _anonymous_fd(self.size)
        """Descriptor a worker receives to map the same pages (open while the arena lives)."""
        # Populated at mapping: one kernel pass that allocates and maps every page is ~2x
        # cheaper than faulting them in one by one during the first copy (measured: 1 GiB
        # mapped+copied in 0.7 s instead of 1.4 s).
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self._buffer: mmap.mmap | None = mmap.mmap(self.fd, self.size, flags=flags)
        self._base_ptr = torch.frombuffer(self._buffer, dtype=torch.uint8).data_ptr()
        self._views = slot_views(self._buffer, self.slots)
        self._pinned = False
        self.stage_count = 0
        """How many saves were staged into this arena (buffers reused after the first)."""

    def matches(self, slots: list[TensorSlot]) -> bool:
        """True when ``slots`` is exactly this arena's layout (so it can be reused)."""
        return self._buffer is not None and slots == self.slots

    def data_ptr(self) -> int:
        """Address of the arena in this process (stable while the arena is reused)."""
        return self._base_ptr

    def stage(self, tensors: Mapping[SlotKey, torch.Tensor]) -> None:
        """Copy every tensor into its slot; returns once the copies have landed."""
        on_device = any(t.device.type != "cpu" for t in tensors.values())
        if on_device:
            self._pin()
        for key, view in self._views.items():
            copy_into(view, tensors[key], non_blocking=on_device)
        if on_device:
            _synchronize()
        self.stage_count += 1

    def _pin(self) -> None:
        if self._pinned or not torch.cuda.is_available() or not self._views:
            return
        # Page-locking the shared mapping lets device->host copies run as DMA without a
        # bounce buffer; done once, the mapping lives as long as the arena.
        torch.cuda.cudart().cudaHostRegister(self._base_ptr, self.size, 0)  # type: ignore[no-untyped-call]
        self._pinned = True

    def close(self) -> None:
        """Drop this process's mapping and descriptor (a worker's mapping stays valid)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._pinned:
            torch.cuda.cudart().cudaHostUnregister(self._base_ptr)  # type: ignore[no-untyped-call]
            self._pinned = False
        self._views = {}
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            try:
                buffer.close()
            except BufferError:
                # A caller still holds a view; the mapping goes away with the last reference.
                log.debug("staging arena still referenced; unmapped with its last view")


def _is_dense_host_copy(dst: torch.Tensor, src: torch.Tensor) -> bool:
    """True when ``src``'s bytes are exactly what ``dst`` must hold, as one block in host memory."""
    # Exactly a tensor or a parameter: a subclass (FP8 wrappers, DTensor) may hold its bytes
    # elsewhere than data_ptr() says, and only its own copy_ knows.
    return (
        type(src) in (torch.Tensor, torch.nn.Parameter)
        and src.device.type == "cpu"
        and src.layout == torch.strided
        and not src.is_quantized
        and not src.is_conj()
        and not src.is_neg()
        and src.dtype == dst.dtype
        and src.shape == dst.shape
        and src.is_contiguous()
        and dst.is_contiguous()
    )


def copy_into(dst: torch.Tensor, src: torch.Tensor, non_blocking: bool = False) -> None:
    """Copy ``src`` into the slot view ``dst`` (same shape), as fast as the host allows.

    A dense host tensor is copied with libc's ``memmove``: for large blocks glibc streams the
    stores past the cache, and it beat ``Tensor.copy_`` (a vectorised loop) by ~15% on this
    project's machines (1 GiB in 64 tensors, one thread: 156 ms vs 183 ms), which is the whole
    blocking part of an async save. ctypes releases the GIL for the call, so other threads of
    the training process run meanwhile. Everything else (device tensors, other dtypes,
    strided or conjugate views) goes through ``copy_``, which converts as needed; non-blocking
    only pays off for device->host copies into pinned memory.
    """
    if _is_dense_host_copy(dst, src):
        if src.numel():
            ctypes.memmove(dst.data_ptr(), src.data_ptr(), src.numel() * src.element_size())
        return
    dst.copy_(src, non_blocking=non_blocking)


def _synchronize() -> None:
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is not None:
        torch.accelerator.synchronize()


def attach(fd: int, slots: list[TensorSlot]) -> tuple[mmap.mmap, dict[SlotKey, torch.Tensor]]:
    """Map an arena received as ``fd`` (worker side) and view its slots; closes ``fd``."""
    try:
        buffer = mmap.mmap(fd, arena_size(slots))
    finally:
        os.close(fd)
    return buffer, slot_views(buffer, slots)
