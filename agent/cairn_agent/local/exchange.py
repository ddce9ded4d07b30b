"""Moving checkpoint parts between ranks on the process group's own device.

nvidia-resiliency-ext 0.4.1 sends every tensor through ``.cuda()``; here a part's tensors are
packed into one contiguous byte buffer on ``collective_device(group)`` (gloo: host memory;
NCCL: the current GPU) and moved with one collective or one send per part, then unpacked into
views of that buffer. Received parts land in host memory (where they are written), as nvrx's
clique strategy does with ``target_device="cpu"``.

Also here: the shard exchange of the ``fully_parallel`` algorithm, which megatron-core only
runs on CUDA (``exchange_by_distribution`` then ``torch.cuda.synchronize()``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cairn_agent.engine.device import collective_device
from cairn_agent.local._nvrx_compat import CkptID, ExchangePlan, TensorAwareStateDict

_ALIGN = 64
"""Byte alignment of each tensor in a packed buffer (any dtype can be viewed at it)."""


@dataclass(frozen=True)
class Slot:
    """Where one tensor sits in a packed buffer."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def plan_slots(tensors: Sequence[torch.Tensor]) -> tuple[list[Slot], int]:
    """Slots of ``tensors`` packed in order, and the buffer size in bytes."""
    slots: list[Slot] = []
    offset = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        slots.append(Slot(offset, nbytes, tensor.dtype, tuple(tensor.shape)))
        offset += -(-nbytes // _ALIGN) * _ALIGN
    return slots, offset


def pack(tensors: Sequence[torch.Tensor], slots: Sequence[Slot], buffer: torch.Tensor) -> None:
    """Copy ``tensors`` into their slots of the uint8 ``buffer``."""
    for tensor, slot in zip(tensors, slots, strict=True):
        if slot.nbytes:
            flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
            buffer[slot.offset : slot.offset + slot.nbytes].copy_(flat)


def unpack(buffer: torch.Tensor, slots: Sequence[Slot]) -> list[torch.Tensor]:
    """Views of ``buffer`` shaped as the packed tensors were."""
    return [buffer[s.offset : s.offset + s.nbytes].view(s.dtype).reshape(s.shape) for s in slots]


def packed(
    tensors: Sequence[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, list[Slot]]:
    """A fresh buffer on ``device`` holding ``tensors`` (a snapshot), and their slots."""
    slots, size = plan_slots(tensors)
    buffer = torch.empty(size, dtype=torch.uint8, device=device)
    pack(tensors, slots, buffer)
    return buffer, slots


def _to_host(buffer: torch.Tensor) -> torch.Tensor:
    return buffer if buffer.device.type == "cpu" else buffer.cpu()


class GroupExchange:
    """:class:`~cairn_agent.local._nvrx_compat.PartExchange` over one process group."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.device = collective_device(group)

    def all_gather_parts(self, part: TensorAwareStateDict) -> list[TensorAwareStateDict]:
        """Every member's part, in group order, each whole and in host memory.

        ``part`` is left hollow (its tensors popped), as nvrx's clique ``replicate`` leaves it;
        this rank's own entry is a copy whose tensors view a snapshot buffer, so training may
        change the live tensors while the parts are written.
        """
        tensors = part.pop_tensors()
        slots, size = plan_slots(tensors)
        metas: list[Any] = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(metas, (part, slots, size), group=self.group)
        me = dist.get_rank(self.group)
        gathered = []
        # One broadcast per member, not one all_gather: gloo's all_gather of large buffers is
        # several times slower than its broadcast, and no buffer needs padding to a common size.
        for member, (hollow, member_slots, member_size) in enumerate(metas):
            if member == me:
                buffer, _ = packed(tensors, self.device)
            else:
                buffer = torch.empty(int(member_size), dtype=torch.uint8, device=self.device)
            dist.broadcast(buffer, dist.get_global_rank(self.group, member), group=self.group)
            gathered.append(_filled(hollow, _to_host(buffer), member_slots))
        return gathered

    def send_part(self, part: TensorAwareStateDict, dst: int) -> None:
        """Send ``part`` to global rank ``dst`` (``part`` is left whole)."""
        tensors = part.pop_tensors()
        try:
            buffer, slots = packed(tensors, self.device)
            dist.send_object_list([(part, slots, buffer.numel())], dst, group=self.group)
            dist.send(buffer, dst, group=self.group)
        finally:
            part.insert_tensors(tensors)

    def recv_part(self, src: int) -> TensorAwareStateDict:
        """Receive a part from global rank ``src``, tensors back on their original devices."""
        box: list[Any] = [None]
        dist.recv_object_list(box, src, group=self.group)
        hollow, slots, size = box[0]
        buffer = torch.empty(int(size), dtype=torch.uint8, device=self.device)
        dist.recv(buffer, src, group=self.group)
        part = _filled(hollow, buffer, slots)
        part.restore_tensor_device(non_blocking=False)
        return part

    def execute(
        self, plan: ExchangePlan, my_data: Mapping[CkptID, TensorAwareStateDict]
    ) -> dict[CkptID, TensorAwareStateDict]:
        """Carry out nvrx's retrieval plan: every rank walks the entries in the same order.

        Each send meets its receive at the same position of the shared order, so the blocking
        point-to-point calls cannot deadlock.
        """
        me = dist.get_rank()
        received: dict[CkptID, TensorAwareStateDict] = {}
        for entry in plan.entries:
            if entry.sender == me == entry.receiver:
                received[entry.id_] = my_data[entry.id_]
            elif entry.sender == me:
                self.send_part(my_data[entry.id_], entry.receiver)
            elif entry.receiver == me:
                received[entry.id_] = self.recv_part(entry.sender)
        return received


def _filled(
    hollow: TensorAwareStateDict, buffer: torch.Tensor, slots: Sequence[Slot]
) -> TensorAwareStateDict:
    hollow.insert_tensors(unpack(buffer, slots))
    return hollow


# --- fully_parallel: every rank saved only the shards assigned to it ----------------------------

ShardId = tuple[str, tuple[int, ...], tuple[int, int] | None]


def _shard_id(sharded: Any) -> ShardId:
    # Same identity as megatron-core's shard ids: key, offset, and the flat range if any.
    flat = sharded.flattened_range
    return (
        str(sharded.key),
        tuple(int(o) for o in sharded.global_offset),
        None if flat is None else (int(flat.start), int(flat.stop)),
    )


def _sharded_tensors(part: Any) -> Iterator[Any]:
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    for value in nested_values(part.sharded_state_dict):
        if isinstance(value, ShardedTensor):
            yield value


def fill_missing_shards(part: Any, group: dist.ProcessGroup | None) -> int:
    """Give ``part`` the shards other ranks of ``group`` saved for it; returns how many.

    Collective on ``group``. Each rank broadcasts, once, the shards it holds that another rank
    lacks (the first holder in group order sends), packed in one buffer on the group's device.
    """
    device = collective_device(group)
    held = {_shard_id(s): s for s in _sharded_tensors(part) if s.data is not None}
    missing = {_shard_id(s): s for s in _sharded_tensors(part) if s.data is None}
    mine = ([(i, s.data.dtype, tuple(s.data.shape)) for i, s in held.items()], list(missing))
    views: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(views, mine, group=group)
    wanted = {i for _, lacking in views for i in lacking}
    owner: dict[ShardId, int] = {}
    for member, (holds, _) in enumerate(views):
        for shard, _, _ in holds:
            owner.setdefault(shard, member)
    me = dist.get_rank(group)
    for member, (holds, _) in enumerate(views):
        sent = [(i, d, s) for i, d, s in holds if i in wanted and owner[i] == member]
        if sent:
            _broadcast_shards(sent, member, me, held, missing, group, device)
    return len(missing)


def _broadcast_shards(
    sent: list[tuple[ShardId, torch.dtype, tuple[int, ...]]],
    member: int,
    me: int,
    held: dict[ShardId, Any],
    missing: dict[ShardId, Any],
    group: dist.ProcessGroup | None,
    device: torch.device,
) -> None:
    meta = [torch.empty(shape, dtype=dtype, device="meta") for _, dtype, shape in sent]
    slots, size = plan_slots(meta)
    buffer = torch.empty(size, dtype=torch.uint8, device=device)
    if member == me:
        pack([held[i].data for i, _, _ in sent], slots, buffer)
    src = member if group is None else dist.get_global_rank(group, member)
    dist.broadcast(buffer, src, group=group)
    if member == me:
        return
    for (shard, _, _), tensor in zip(sent, unpack(buffer, slots), strict=True):
        if shard in missing:
            missing[shard].data = tensor


def to_state_dict(
    part: Any, template: dict[str, Any], algo: str, group: dist.ProcessGroup | None
) -> dict[str, Any]:
    """megatron-core's ``to_state_dict`` of a loaded part, for either algorithm, on any device.

    ``fully_parallel``: the missing shards are exchanged here first, then megatron-core
    assembles the state dict as for ``atomic`` (which needs no device synchronisation).
    """
    if algo == "fully_parallel" and template:
        fill_missing_shards(part, group)
    state_dict: dict[str, Any] = part.to_state_dict(
        template, algo="atomic", parallelization_group=group
    )
    return state_dict
