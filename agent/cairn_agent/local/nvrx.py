"""Node-local checkpoints through nvidia-resiliency-ext's ``LocalCheckpointManager`` (spec §1.8).

The layout is nvrx's own: ``<node dir>/<rank>/iter_NNNNNNN_<origin>_local.pt``, one file per
part a rank holds (its own, and its replication clique peers' when replication is on), plus
Cairn's per-iteration commit record with each part's checksum (``local.store``). State dicts
travel as megatron-core ``MCoreTensorAwareStateDict``, which remembers each tensor's device.

Everything runs on any device: replication and the ``fully_parallel`` shard exchange move
tensors over the job's own process groups on the group's device (``local.exchange``), and
async saves write from a background thread, committed by the next ``finalize``
(``local.tier``). Nodes and their directories come from the launcher (``local.nodes``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from cairn_agent.local.tier import LocalTier, TierSettings

log = logging.getLogger(__name__)

MANAGER_KEY = "local_checkpoint_manager"
"""Key of the ``LocalCheckpointManager`` in the checkpointing context (Bridge's name)."""
TIER_KEY = "cairn_local_tier"
"""Key of Cairn's :class:`~cairn_agent.local.tier.LocalTier` in the checkpointing context."""
CACHE_KEY = "local_checkpoint_cache"
"""Key of the cached shard distribution reused by later local saves (Bridge's name)."""


class LocalCheckpointSettings(Protocol):
    """The ``CheckpointConfig`` fields node-local checkpointing reads."""

    @property
    def non_persistent_ckpt_type(self) -> str | None: ...
    @property
    def non_persistent_local_ckpt_dir(self) -> str | None: ...
    @property
    def replication(self) -> bool: ...
    @property
    def replication_jump(self) -> int | None: ...
    @property
    def replication_factor(self) -> int: ...


def _require_nvrx() -> None:
    try:
        import nvidia_resiliency_ext.checkpointing.local.ckpt_managers.local_manager  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "non_persistent_ckpt_type='local' needs the nvidia_resiliency_ext package, which "
            "is not installed; install nvidia-resiliency-ext or use non_persistent_ckpt_type="
            "'global'"
        ) from exc


def init_checkpointing_context(checkpoint_config: LocalCheckpointSettings) -> dict[str, Any]:
    """The checkpointing context: ``{}`` unless ``non_persistent_ckpt_type == "local"``.

    For local checkpoints it holds ``local_checkpoint_manager`` (an nvrx
    ``LocalCheckpointManager`` rooted at this rank's node directory) and Cairn's tier.
    Collective: every rank learns every rank's node, and the replication groups are created.
    """
    if checkpoint_config.non_persistent_ckpt_type != "local":
        return {}
    local_dir = checkpoint_config.non_persistent_local_ckpt_dir
    if not local_dir:
        raise ValueError(
            "non_persistent_ckpt_type='local' needs non_persistent_local_ckpt_dir (a node-local "
            "directory)"
        )
    _require_nvrx()
    tier = LocalTier.build(
        TierSettings(
            local_dir=local_dir,
            replication=checkpoint_config.replication,
            replication_jump=checkpoint_config.replication_jump,
            replication_factor=checkpoint_config.replication_factor,
        )
    )
    return {MANAGER_KEY: tier.manager, TIER_KEY: tier}


def local_tier(checkpointing_context: dict[str, Any] | None) -> LocalTier:
    """The context's local tier; ``ValueError`` (with the fix) if there is none."""
    tier = (checkpointing_context or {}).get(TIER_KEY)
    if tier is None:
        raise ValueError(
            "the checkpointing context has no local checkpoint manager; build it with "
            "init_checkpointing_context(cfg) for non_persistent_ckpt_type='local'"
        )
    found: LocalTier = tier
    return found


def local_manager(checkpointing_context: dict[str, Any] | None) -> Any:
    """The context's ``LocalCheckpointManager``; ``ValueError`` if there is none."""
    return local_tier(checkpointing_context).manager


def find_latest_local_iteration(checkpointing_context: dict[str, Any] | None) -> int:
    """Newest iteration every rank can restore locally (own part or replica), or -1. Collective."""
    return local_tier(checkpointing_context).survey().restorable


def to_tensor_aware(
    checkpointing_context: dict[str, Any],
    state_dict: dict[str, Any],
    *,
    algo: str,
    parallelization_group: Any,
    assume_constant_structure: bool,
) -> Any:
    """megatron-core's tensor-aware form of a sharded state dict (shard plan cached if asked)."""
    from megatron.core.dist_checkpointing.tensor_aware_state_dict import (
        MCoreTensorAwareStateDict,
    )

    cached = checkpointing_context.get(CACHE_KEY) if assume_constant_structure else None
    tensor_aware, distribution = MCoreTensorAwareStateDict.from_state_dict(
        state_dict,
        algo=algo,
        parallelization_group=parallelization_group,
        cached_metadata=cached,
    )
    if assume_constant_structure:
        checkpointing_context[CACHE_KEY] = distribution
    return tensor_aware


def save_local_checkpoint(
    checkpointing_context: dict[str, Any],
    state_dict: dict[str, Any],
    iteration: int,
    *,
    algo: str = "atomic",
    parallelization_group: Any = None,
    assume_constant_structure: bool = False,
    is_async: bool = False,
) -> None:
    """Save a sharded state dict as this rank's local checkpoint of ``iteration``. Collective.

    Sync: returns once the iteration is committed on every rank and older ones are removed.
    Async: returns once the parts are exchanged; ``finalize_local`` commits them later.
    """
    tensor_aware = to_tensor_aware(
        checkpointing_context,
        state_dict,
        algo=algo,
        parallelization_group=parallelization_group,
        assume_constant_structure=assume_constant_structure,
    )
    local_tier(checkpointing_context).save(tensor_aware, iteration, is_async=is_async)


def finalize_local(checkpointing_context: dict[str, Any] | None, blocking: bool) -> int | None:
    """Commit an async local save once written everywhere; its iteration, else None. Collective."""
    return local_tier(checkpointing_context).finalize(blocking)


def load_local_state_dict(
    checkpointing_context: dict[str, Any] | None,
    sharded_state_dict: dict[str, Any] | None,
    *,
    algo: str = "atomic",
    parallelization_group: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Load the newest restorable local checkpoint into ``sharded_state_dict``'s layout.

    Returns ``(state_dict, ckpt_id)`` where ``ckpt_id`` is nvrx's ``(iteration, rank,
    session_id)``. ``find_latest_local_iteration`` must have run first. Collective.
    """
    from cairn_agent.local.exchange import to_state_dict

    part, ckpt_id = local_tier(checkpointing_context).load()
    return to_state_dict(part, sharded_state_dict or {}, algo, parallelization_group), ckpt_id
