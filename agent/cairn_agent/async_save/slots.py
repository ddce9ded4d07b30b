"""Where each tensor of a save lives in the staging arena (shared by training process and worker).

Kept free of megatron-core and of the queue so the worker process imports little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.checkpoint.planner import SavePlan, WriteItem, WriteItemType

SlotKey = tuple[str, tuple[int, ...]]
"""``(fqn, global offset)`` of one tensor write item: how the worker finds its staged data."""


def slot_key(item: WriteItem) -> SlotKey:
    offset = item.index.offset
    return item.index.fqn, tuple(int(o) for o in offset) if offset is not None else ()


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor write item lives in the staging arena."""

    key: SlotKey
    offset: int
    """Byte offset in the arena."""
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * torch.empty((), dtype=self.dtype).element_size()


def layout_slots(plan: SavePlan, alignment: int = 64) -> list[TensorSlot]:
    """Arena layout of ``plan``'s tensor items, in plan order, each ``alignment``-aligned."""
    slots: list[TensorSlot] = []
    offset = 0
    for item in plan.items:
        if item.type == WriteItemType.BYTE_IO or item.tensor_data is None:
            continue
        dtype = item.tensor_data.properties.dtype
        # The chunk is this rank's piece; ``tensor_data.size`` is the global shape.
        shape = tuple(int(d) for d in item.tensor_data.chunk.sizes)
        slot = TensorSlot(slot_key(item), offset, dtype, shape)
        slots.append(slot)
        offset += -(-slot.nbytes // alignment) * alignment
    return slots
