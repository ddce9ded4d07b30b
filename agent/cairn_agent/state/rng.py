"""Random-number-generator state for checkpoints (seed API ``get_rng_state``).

What is saved per rank, in the layout Megatron-Bridge and Megatron-LM use (spec §1.4):
python ``random``, numpy, torch CPU, CUDA (only where CUDA is available) and megatron-core's
tensor-parallel RNG tracker. With ``torch_dist`` the list of per-rank dicts is wrapped in a
``ShardedObject`` keyed ``rng_state`` sharded by (pipeline, tensor) rank with the
data-parallel rank as replica id, so exactly one data-parallel replica writes it; with expert
parallelism the data-parallel rank becomes a shard dimension instead.

CPU-only runs save no ``cuda_rng_state`` and an empty ``rng_tracker_states`` (megatron-core's
tracker only holds CUDA generator states). Megatron-Bridge itself refuses to restore RNG from
such a checkpoint on GPU (it expects both), so resume it there with ``load_rng=False``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from megatron.core.dist_checkpointing.mapping import ShardedObject

from cairn_agent.engine import dist
from cairn_agent.engine.topology import Topology, topology

log = logging.getLogger(__name__)

RNG_STATE_KEY = "rng_state"
"""Key of the RNG ``ShardedObject`` in the checkpoint (``rng_state/shard_<pp>.<tp>_...``)."""

RngDict = dict[str, Any]


def _tracker() -> Any:
    from megatron.core import tensor_parallel

    return tensor_parallel.get_cuda_rng_tracker()


def _tracker_states() -> dict[str, Any]:
    try:
        states: dict[str, Any] = dict(_tracker().get_states())
    except (RuntimeError, AssertionError) as exc:
        # A tracker that cannot even be built (no CUDA) holds no state worth saving.
        log.debug("no tensor-parallel RNG tracker states: %s", exc)
        return {}
    return states


def collect_local_rng_state() -> RngDict:
    """This process's generator states, in Megatron's ``rng_dict`` layout."""
    state: RngDict = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng_state"] = torch.cuda.get_rng_state()
    state["rng_tracker_states"] = _tracker_states()
    return state


def _wrap(
    states: list[RngDict], ranks: Topology, ckpt_format: str, key: str
) -> ShardedObject | dict[str, list[RngDict]]:
    if ckpt_format == "fsdp_dtensor":
        return {f"({ranks.pp_rank}, {ranks.tp_rank})": states}
    if ranks.ep_size > 1:
        # Expert-parallel ranks of one data-parallel group hold different expert RNG streams,
        # so every data-parallel rank writes its own shard instead of one replica for all.
        return ShardedObject(
            key,
            states,
            (ranks.pp_size, ranks.tp_size, ranks.dp_cp_size),
            (ranks.pp_rank, ranks.tp_rank, ranks.dp_cp_rank),
            replica_id=0,
        )
    return ShardedObject(
        key,
        states,
        (ranks.pp_size, ranks.tp_size),
        (ranks.pp_rank, ranks.tp_rank),
        replica_id=ranks.dp_cp_rank,
    )


def get_rng_state(
    data_parallel_random_init: bool,
    ckpt_format: str = "torch_dist",
    *,
    pg_collection: Any = None,
    module_name: str | None = None,
) -> ShardedObject | dict[str, list[RngDict]]:
    """RNG states of random, numpy, torch, CUDA and the tensor-parallel tracker, ready to save.

    Collective over the data-parallel group when ``data_parallel_random_init`` is set and
    that group has more than one rank: every replica's state is gathered so each one resumes
    its own stream. Ranks come from ``pg_collection`` (megatron-core ``ProcessGroupCollection``),
    else from ``megatron.core.parallel_state`` when initialised, else every rank is a
    data-parallel replica. Returns a ``ShardedObject`` for ``torch_dist`` and
    ``{"(pp, tp)": states}`` for ``fsdp_dtensor``.
    """
    if ckpt_format not in ("torch_dist", "fsdp_dtensor"):
        raise ValueError(
            f"ckpt_format {ckpt_format!r} is not supported for RNG state; use 'torch_dist' "
            "or 'fsdp_dtensor'"
        )
    ranks = topology(pg_collection)
    state = collect_local_rng_state()
    if data_parallel_random_init and dist.is_distributed() and ranks.dp_cp_size > 1:
        states: list[RngDict] = dist.all_gather_object(state, ranks.dp_cp_group)
    else:
        states = [state]
    key = RNG_STATE_KEY if module_name is None else f"{RNG_STATE_KEY}.{module_name}"
    return _wrap(states, ranks, ckpt_format, key)


def _pick_entry(
    rng_state: Sequence[RngDict] | RngDict, data_parallel_random_init: bool, dp_rank: int
) -> RngDict:
    if isinstance(rng_state, Mapping):
        return dict(rng_state)
    if not rng_state:
        raise RuntimeError("the checkpoint's RNG state list is empty; load with load_rng=False")
    if not data_parallel_random_init:
        return rng_state[0]
    if dp_rank >= len(rng_state):
        raise RuntimeError(
            f"the checkpoint holds RNG states of {len(rng_state)} data-parallel ranks but this "
            f"is data-parallel rank {dp_rank} (the data-parallel size grew); load with "
            "load_rng=False"
        )
    return rng_state[dp_rank]


def _restore_tracker(states: Mapping[str, Any]) -> None:
    from megatron.core import tensor_parallel

    tracker = _tracker()
    graph_safe = tensor_parallel.is_graph_safe_cuda_rng_tracker(tracker)
    tracker.set_states(
        {
            name: tensor_parallel.convert_cuda_rng_state(value, to_graphable=graph_safe)
            for name, value in states.items()
        }
    )


def _restore_cuda(entry: RngDict) -> None:
    if not torch.cuda.is_available():
        return
    if "cuda_rng_state" in entry:
        torch.cuda.set_rng_state(entry["cuda_rng_state"])
    else:
        log.warning("checkpoint has no CUDA RNG state (saved on CPU); CUDA RNG left as is")


def restore_rng_state(
    rng_state: Sequence[RngDict] | RngDict,
    data_parallel_random_init: bool,
    *,
    pg_collection: Any = None,
) -> None:
    """Set every generator from a loaded ``rng_state`` (the list ``get_rng_state`` saved).

    Picks this data-parallel rank's entry when ``data_parallel_random_init`` is set, else the
    first. A single dict (older flat layout) is used as is. Tracker states are restored only
    when the checkpoint holds some (CPU checkpoints hold none).
    """
    dp_rank = topology(pg_collection).dp_cp_rank
    entry = _pick_entry(rng_state, data_parallel_random_init, dp_rank)
    random.setstate(entry["random_rng_state"])
    np.random.set_state(entry["np_rng_state"])
    torch.set_rng_state(entry["torch_rng_state"])
    _restore_cuda(entry)
    tracker_states = entry.get("rng_tracker_states") or {}
    if tracker_states:
        _restore_tracker(tracker_states)
