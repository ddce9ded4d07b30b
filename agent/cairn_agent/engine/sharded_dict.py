"""Turn plain PyTorch state dicts into megatron-core sharded state dicts.

megatron-core's ``torch_dist`` format only stores ``ShardedTensor``/``ShardedObject`` leaves in
the DCP files; everything else goes to ``common.pt``. Models built with megatron-core already
produce such dicts (``model.sharded_state_dict()``); this module covers everything else:

- a plain tensor is taken to be *replicated* on every rank: one ``ShardedTensor`` covering the
  whole tensor, ``replica_id = rank``, so only rank 0 writes it and any world size reads it;
- a ``DTensor`` becomes a ``ShardedTensor`` of its local shard at its global offset (replicated
  mesh dimensions become the replica id), so FSDP2/TP state reshards on load;
- megatron-core ``ShardedBase`` objects and ``LocalNonpersistentObject`` pass through unchanged;
- any other value stays as it is and is saved in ``common.pt`` by rank 0.

Keys of the generated tensors are the dotted path of the leaf (``prefix`` + ``a.b.0.c``); they
must be the same on every rank and between save and load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from megatron.core.dist_checkpointing.mapping import (
    LocalNonpersistentObject,
    ShardedBase,
    ShardedTensor,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard

from cairn_agent.engine._torch_compat import local_shape_and_global_offset
from cairn_agent.engine.dist import get_rank


def to_sharded_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A sharded copy of ``state_dict`` (containers are copied, tensors are not).

    See the module docstring for what each kind of leaf becomes. ``prefix`` is prepended to
    every generated ``ShardedTensor`` key, e.g. ``"model."``.
    """
    return {key: _convert(value, f"{prefix}{key}") for key, value in state_dict.items()}


def _convert(value: Any, key: str) -> Any:
    if isinstance(value, (ShardedBase, LocalNonpersistentObject)):
        return value
    if isinstance(value, DTensor):
        return dtensor_to_sharded_tensor(key, value)
    if isinstance(value, torch.Tensor):
        return replicated_sharded_tensor(key, value)
    if isinstance(value, Mapping):
        return {k: _convert(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_convert(v, f"{key}.{i}") for i, v in enumerate(value))
    return value


def replicated_sharded_tensor(key: str, tensor: torch.Tensor) -> ShardedTensor:
    """A tensor every rank holds in full: rank 0's copy is the one written."""
    return ShardedTensor.from_rank_offsets(key, tensor.detach(), replica_id=get_rank())


def dtensor_to_sharded_tensor(key: str, tensor: DTensor) -> ShardedTensor:
    """The local shard of ``tensor`` placed at its global offset.

    Raises ``TypeError`` for ``Partial`` placements: a pending reduction has no single value
    to save; call ``full_tensor()`` or ``redistribute()`` first.
    """
    mesh, placements = tensor.device_mesh, tensor.placements
    for placement in placements:
        if not isinstance(placement, (Shard, Replicate)):
            raise TypeError(
                f"{key}: cannot checkpoint a DTensor with placement {placement}; "
                "redistribute it to Shard/Replicate placements first"
            )
    global_shape = tuple(tensor.shape)
    local_shape, global_offset = local_shape_and_global_offset(global_shape, mesh, placements)
    local = tensor.to_local().detach()
    return ShardedTensor(
        key=key,
        data=local,
        dtype=local.dtype,
        local_shape=tuple(local_shape),
        global_shape=global_shape,
        global_offset=tuple(global_offset),
        axis_fragmentations=_regular_grid(global_shape, mesh, placements),
        replica_id=_replica_id(mesh, placements),
    )


def _regular_grid(
    global_shape: tuple[int, ...], mesh: DeviceMesh, placements: tuple[Any, ...]
) -> tuple[int, ...] | None:
    """Shards per dimension when every rank's shard has the same shape, else None.

    Decided from global facts only, so every rank reaches the same answer (megatron-core's
    integrity check requires it); uneven grids are left to DCP's own coverage check.
    """
    fragments = [1] * len(global_shape)
    for mesh_dim, placement in enumerate(placements):
        if isinstance(placement, Shard):
            if type(placement) is not Shard:  # strided/interleaved variants are never regular
                return None
            fragments[placement.dim] *= mesh.size(mesh_dim)
    if any(size % frag for size, frag in zip(global_shape, fragments, strict=True)):
        return None
    return tuple(fragments)


def _replica_id(mesh: DeviceMesh, placements: tuple[Any, ...]) -> tuple[int, ...] | int:
    """This rank's coordinates along replicated mesh dims; all zeros marks the copy to write."""
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        raise ValueError("this rank is not part of the DTensor's device mesh")
    replicated = tuple(
        coordinate[mesh_dim]
        for mesh_dim, placement in enumerate(placements)
        if isinstance(placement, Replicate)
    )
    return replicated if replicated else 0
