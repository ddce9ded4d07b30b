"""Where this rank sits in the parallel layout: the one place that asks.

The layout comes from, in order: a megatron-core ``ProcessGroupCollection`` the caller passes
(newer Bridge releases), megatron-core's global ``parallel_state`` when the run initialised it,
else the plain world (every rank its own data-parallel replica of one shard). RNG sharding,
dataloader ownership and node-local replication groups all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cairn_agent.engine import dist


@dataclass(frozen=True, kw_only=True)
class Topology:
    """This rank's coordinates in the (pipeline, tensor, context, data, expert) layout."""

    pp_rank: int
    pp_size: int
    tp_rank: int
    tp_size: int
    cp_rank: int
    dp_rank: int
    """Data-parallel rank without context parallelism (megatron-core's ``dp``)."""
    dp_size: int
    dp_group: Any
    """Data-parallel process group (None: the default group)."""
    dp_cp_rank: int
    """Data-parallel rank with context parallelism included (megatron-core's ``dp_cp``)."""
    dp_cp_size: int
    dp_cp_group: Any
    """Process group of the data-parallel x context-parallel replicas (None: default group)."""
    ep_size: int

    @property
    def first_in_model_parallel(self) -> bool:
        """True on the rank that is first in its pipeline, tensor and context groups."""
        return self.pp_rank == 0 and self.tp_rank == 0 and self.cp_rank == 0


def _from_pg_collection(pgs: Any) -> Topology:
    # A ProcessGroupCollection has only the groups the run built: cp and ep are optional.
    cp = getattr(pgs, "cp", None)
    ep = getattr(pgs, "ep", None)
    return Topology(
        pp_rank=pgs.pp.rank(),
        pp_size=pgs.pp.size(),
        tp_rank=pgs.tp.rank(),
        tp_size=pgs.tp.size(),
        cp_rank=cp.rank() if cp is not None else 0,
        dp_rank=pgs.dp.rank(),
        dp_size=pgs.dp.size(),
        dp_group=pgs.dp,
        dp_cp_rank=pgs.dp_cp.rank(),
        dp_cp_size=pgs.dp_cp.size(),
        dp_cp_group=pgs.dp_cp,
        ep_size=ep.size() if ep is not None else 1,
    )


def _from_parallel_state() -> Topology | None:
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return None
    return Topology(
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        pp_size=ps.get_pipeline_model_parallel_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        tp_size=ps.get_tensor_model_parallel_world_size(),
        cp_rank=ps.get_context_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
        dp_size=ps.get_data_parallel_world_size(),
        dp_group=ps.get_data_parallel_group(),
        dp_cp_rank=ps.get_data_parallel_rank(with_context_parallel=True),
        dp_cp_size=ps.get_data_parallel_world_size(with_context_parallel=True),
        dp_cp_group=ps.get_data_parallel_group(with_context_parallel=True),
        ep_size=ps.get_expert_model_parallel_world_size(),
    )


def _from_world() -> Topology:
    rank, size = dist.get_rank(), dist.get_world_size()
    return Topology(
        pp_rank=0,
        pp_size=1,
        tp_rank=0,
        tp_size=1,
        cp_rank=0,
        dp_rank=rank,
        dp_size=size,
        dp_group=None,
        dp_cp_rank=rank,
        dp_cp_size=size,
        dp_cp_group=None,
        ep_size=1,
    )


def topology(pg_collection: Any = None) -> Topology:
    """This rank's topology, from ``pg_collection`` when given, else as the run set it up."""
    if pg_collection is not None:
        return _from_pg_collection(pg_collection)
    return _from_parallel_state() or _from_world()
