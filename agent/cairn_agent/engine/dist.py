"""Collectives the engine needs, usable with or without an initialised process group.

Without one (a plain single-process script) every helper behaves as a group of one: rank 0,
world size 1, barriers return at once, objects come back unchanged. Ranks passed in and
returned are ranks *within* ``group`` (the default group when ``group`` is None).

Control tensors live on :func:`~cairn_agent.engine.device.collective_device`, never on a
hard-coded CUDA device, so the same code runs on gloo (CPU) and NCCL (GPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from cairn_agent.engine.device import collective_device


def is_distributed() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    return dist.get_rank(group) if is_distributed() else 0


def get_world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (1 without a process group)."""
    return dist.get_world_size(group) if is_distributed() else 1


def barrier(group: dist.ProcessGroup | None = None) -> None:
    """Wait for every rank of ``group``; a no-op without a process group."""
    if is_distributed():
        # A tiny all-reduce instead of dist.barrier(): NCCL's barrier guesses a device from
        # the rank number, which is wrong when ranks do not map 1:1 onto local devices.
        all_reduce_max_int(0, group)


def broadcast_object(obj: Any, src: int = 0, group: dist.ProcessGroup | None = None) -> Any:
    """``obj`` of rank ``src`` (a rank within ``group``), returned on every rank."""
    if not is_distributed():
        return obj
    box = [obj if get_rank(group) == src else None]
    dist.broadcast_object_list(box, group=group, group_src=src, device=collective_device(group))
    return box[0]


def all_gather_object(obj: Any, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Every rank's ``obj``, indexed by rank within ``group``, on every rank."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


def gather_object(
    obj: Any, dst: int = 0, group: dist.ProcessGroup | None = None
) -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst`` (indexed by rank within ``group``); None elsewhere."""
    if not is_distributed():
        return [obj]
    is_dst = get_rank(group) == dst
    gathered: list[Any] | None = [None] * get_world_size(group) if is_dst else None
    dist.gather_object(obj, gathered, group=group, group_dst=dst)
    return gathered


def _all_reduce_int(
    value: int, op: dist.ReduceOp.RedOpType, group: dist.ProcessGroup | None
) -> int:
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=collective_device(group))
    dist.all_reduce(tensor, op=op, group=group)
    return int(tensor.item())


def all_reduce_max_ints(values: list[int], group: dist.ProcessGroup | None = None) -> list[int]:
    """Element-wise maximum of ``values`` over all ranks (one collective for all of them)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=collective_device(group))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return [int(v) for v in tensor.tolist()]


def all_reduce_min_int(value: int, group: dist.ProcessGroup | None = None) -> int:
    """The smallest ``value`` over all ranks, on every rank."""
    return _all_reduce_int(int(value), dist.ReduceOp.MIN, group)


def all_reduce_max_int(value: int, group: dist.ProcessGroup | None = None) -> int:
    """The largest ``value`` over all ranks, on every rank."""
    return _all_reduce_int(int(value), dist.ReduceOp.MAX, group)


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """Give a plain single-process script a one-rank gloo group for the duration of the block.

    megatron-core's save and load call ``torch.distributed`` unconditionally; training scripts
    that never initialised a group can wrap their checkpoint calls in this. If a group already
    exists it is used unchanged.
    """
    if is_distributed():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # type: ignore[attr-defined]  # public API; the stubs do not re-export it
    try:
        yield
    finally:
        dist.destroy_process_group()
