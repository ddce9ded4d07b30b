"""DCP save planning for async saves, done in the training process and cached.

Planning is the only collective part of a DCP write: every rank builds its local plan, the
coordinator merges them into the global ``Metadata`` it writes as ``.metadata`` at finalize.
megatron-core's key mapping (``_replace_state_dict_keys_with_sharded_keys`` +
``mcore_to_pyt_state_dict``) and its ``MCoreSavePlanner`` are used as they are, so the files
are exactly what ``megatron.core.dist_checkpointing.load`` reads.

The plan is cached while the structure is unchanged: every save still builds its (cheap,
local) plan, and one all-reduce (the same that agrees every rank planned) decides on every
rank together whether the cached global plan is reused or the plans are gathered again; ranks
can never take different branches of a collective. Sharding integrity (megatron-core's
all-gather of every shard's metadata) is checked only when the structure changes.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import SavePlan, WriteItemType

from cairn_agent.async_save.slots import SlotKey, slot_key
from cairn_agent.engine import collectives
from cairn_agent.engine import dist as cdist
from cairn_agent.engine._torch_compat import StoragePrefix
from cairn_agent.engine.sharded import split_for_dcp, validate_sharding

log = logging.getLogger(__name__)


@dataclass
class PlannedSave:
    """Everything one save needs after planning (on this rank)."""

    plan: SavePlan
    """This rank's final plan (write items + ``__<rank>_`` storage prefix)."""
    metadata: Metadata | None
    """Global DCP metadata; only on the coordinator."""
    tensors: dict[SlotKey, torch.Tensor]
    """The live tensors to stage (on whatever device they are), by slot key."""
    byte_items: dict[str, bytes]
    """Serialised ShardedObjects by fqn (already a snapshot)."""
    common: dict[str, Any]
    """The non-sharded part; rank 0 saves it as ``common.pt``."""


@dataclass
class _Cache:
    local_plan: SavePlan
    final_plan: SavePlan
    metadata: Metadata | None


class SavePlanCache:
    """Plans saves for one process group, reusing the global plan while the structure holds."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self._group = group
        self._cache: _Cache | None = None
        self.replans = 0
        """How many times the plans were gathered (1 while the structure never changed)."""

    def plan(self, sharded_state_dict: dict[str, Any]) -> PlannedSave:
        """COLLECTIVE: plan the save of ``sharded_state_dict`` (megatron-core sharded dict).

        Raises ``CommitError`` on every rank if planning failed on any rank.
        """
        rank = cdist.get_rank(self._group)
        cache = self._cache
        # One collective on the usual path: "did every rank plan?" and "is every rank's plan
        # the cached one?" are asked together.
        local, same = collectives.run_agreed_with_vote(
            "preparing the async save",
            lambda: _prepare_local(sharded_state_dict, rank),
            lambda prepared: cache is not None and cache.local_plan == prepared.plan,
            self._group,
        )
        if same and cache is not None:
            final_plan, metadata = cache.final_plan, cache.metadata
        else:
            final_plan, metadata = self._global_plan(
                local.plan, local.planner, local.sharded, local.common
            )
        final_plan = local.planner.finish_plan(final_plan)
        tensors, byte_items = _resolve_items(final_plan, local.planner)
        return PlannedSave(final_plan, metadata, tensors, byte_items, local.common)

    def _global_plan(
        self, local_plan: SavePlan, planner: MCoreSavePlanner, sharded: Any, common: Any
    ) -> tuple[SavePlan, Metadata | None]:
        # The structure changed on some rank: validate the sharding the way megatron-core does
        # (it does so on every save), then gather the local plans to the coordinator. Each
        # phase ends in an agreement, so a rank that fails never strands the others.
        if self._group is None or self._group == dist.group.WORLD:
            collectives.run_agreed(
                "validating the sharding", lambda: validate_sharding(sharded, common)
            )
        all_plans = cdist.gather_object(local_plan, 0, self._group)
        metadata = collectives.run_agreed(
            "planning the save", lambda: _global_metadata(all_plans, planner), self._group
        )
        final_plan = planner.create_decentralized_global_plan(local_plan)
        self._cache = _Cache(local_plan, final_plan, metadata)
        self.replans += 1
        log.info("rank %d: async save plan (re)built", cdist.get_rank(self._group))
        return final_plan, metadata


def _global_metadata(
    all_plans: list[SavePlan] | None, planner: MCoreSavePlanner
) -> Metadata | None:
    """The coordinator's global DCP metadata (None on other ranks)."""
    if all_plans is None:
        return None
    _, metadata = planner.create_global_plan(all_plans)
    return metadata  # type: ignore[no-any-return]


def _with_prefix(plan: SavePlan, rank: int) -> SavePlan:
    """Give the plan the per-rank file prefix ``__<rank>_`` megatron-core's files carry."""
    return dataclasses.replace(plan, storage_data=StoragePrefix(f"__{rank}_"))


@dataclass
class _Local:
    sharded: Any
    common: dict[str, Any]
    planner: MCoreSavePlanner
    plan: SavePlan


def _prepare_local(sharded_state_dict: dict[str, Any], rank: int) -> _Local:
    """Split, translate and plan this rank's part (megatron-core's torch_dist mapping)."""
    sharded, common, dcp_state_dict = split_for_dcp(sharded_state_dict)
    # Replicas were already dropped (main replica only), so DCP must not dedup again.
    planner = MCoreSavePlanner(dedup_replicated_tensors=False, flatten_state_dict=False)
    planner.set_up_planner(dcp_state_dict, is_coordinator=rank == 0)
    return _Local(sharded, common, planner, _with_prefix(planner.create_local_plan(), rank))


def _resolve_items(
    plan: SavePlan, planner: MCoreSavePlanner
) -> tuple[dict[SlotKey, torch.Tensor], dict[str, bytes]]:
    tensors: dict[SlotKey, torch.Tensor] = {}
    byte_items: dict[str, bytes] = {}
    for item in plan.items:
        data = planner.resolve_data(item)
        if item.type == WriteItemType.BYTE_IO:
            if not isinstance(data, io.BytesIO):
                raise TypeError(f"{item.index.fqn}: expected serialised bytes, got {type(data)}")
            byte_items[item.index.fqn] = data.getvalue()
        else:
            tensors[slot_key(item)] = data.detach()
    return tensors, byte_items
