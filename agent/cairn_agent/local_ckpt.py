"""Node-local checkpoints through nvidia-resiliency-ext's ``LocalCheckpointManager`` (spec §1.8).

The layout is nvrx's own: ``<non_persistent_local_ckpt_dir>/<rank>/iter_NNNNNNN_<origin>_local.pt``,
written as ``.dirty`` with an exclusive create, then renamed; nvrx keeps one generation and
``find_latest`` picks the newest iteration every rank has (one all-gather). State dicts travel
as megatron-core ``MCoreTensorAwareStateDict``, which remembers each tensor's device.

What works without a GPU (nvrx 0.4.1, megatron-core 0.16.1): synchronous, non-replicated save,
``find_latest`` and load, with the ``atomic`` algorithm. These need CUDA, so they are refused
up front with an error that says what to change instead of failing deep inside nvrx:
replication (peer exchange moves tensors through ``.cuda()``), async local saves (nvrx
synchronizes the CUDA stream before returning), and loading with the ``fully_parallel``
algorithm (megatron-core synchronizes CUDA after the shard exchange).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

MANAGER_KEY = "local_checkpoint_manager"
"""Key of the ``LocalCheckpointManager`` in the checkpointing context (Bridge's name)."""
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


def _replication_strategy(cfg: LocalCheckpointSettings) -> Any:
    if not cfg.replication:
        return None
    if not torch.cuda.is_available():
        raise RuntimeError(
            "local checkpoint replication (replication=True) needs CUDA and NCCL: "
            "nvidia-resiliency-ext moves every replicated tensor to the GPU before sending it; "
            "on a CPU-only machine set replication=False"
        )
    from nvidia_resiliency_ext.checkpointing.local.replication.strategies import (
        CliqueReplicationStrategy,
    )

    if cfg.replication_jump is None:
        return CliqueReplicationStrategy.from_replication_params(
            replication_factor=cfg.replication_factor
        )
    return CliqueReplicationStrategy.from_replication_params(
        cfg.replication_jump, cfg.replication_factor
    )


def init_checkpointing_context(checkpoint_config: LocalCheckpointSettings) -> dict[str, Any]:
    """The checkpointing context: ``{}`` unless ``non_persistent_ckpt_type == "local"``.

    For local checkpoints it holds ``local_checkpoint_manager``, an nvrx
    ``LocalCheckpointManager`` rooted at ``non_persistent_local_ckpt_dir`` (with a clique
    replication strategy when ``replication`` is on). Raises ``RuntimeError`` when nvrx is
    missing or replication is asked for without CUDA. Collective when replication is on
    (nvrx creates the replication process groups).
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
    from nvidia_resiliency_ext.checkpointing.local.ckpt_managers.local_manager import (
        LocalCheckpointManager,
    )

    strategy = _replication_strategy(checkpoint_config)
    manager = LocalCheckpointManager(local_dir, repl_strategy=strategy)
    log.info("local checkpoints under %s (replication %s)", local_dir, strategy is not None)
    return {MANAGER_KEY: manager}


def local_manager(checkpointing_context: dict[str, Any] | None) -> Any:
    """The context's ``LocalCheckpointManager``; ``ValueError`` if there is none."""
    manager = (checkpointing_context or {}).get(MANAGER_KEY)
    if manager is None:
        raise ValueError(
            "the checkpointing context has no local_checkpoint_manager; build it with "
            "init_checkpointing_context(cfg) for non_persistent_ckpt_type='local'"
        )
    return manager


def find_latest_local_iteration(checkpointing_context: dict[str, Any] | None) -> int:
    """Newest iteration that every rank has locally, or -1. Collective (one all-gather)."""
    latest: int = local_manager(checkpointing_context).find_latest()
    return latest


def _check_cpu_algo(algo: str) -> None:
    if algo == "fully_parallel" and not torch.cuda.is_available():
        raise RuntimeError(
            "loading a local checkpoint with non_persistent_local_ckpt_algo='fully_parallel' "
            "needs CUDA (megatron-core synchronizes the GPU after exchanging shards); on a "
            "CPU-only machine use non_persistent_local_ckpt_algo='atomic'"
        )


def save_local_checkpoint(
    checkpointing_context: dict[str, Any],
    state_dict: dict[str, Any],
    iteration: int,
    *,
    algo: str = "atomic",
    parallelization_group: Any = None,
    assume_constant_structure: bool = False,
    is_async: bool = False,
) -> Any:
    """Save a sharded state dict as this rank's local checkpoint of ``iteration``.

    Returns nvrx's ``AsyncRequest`` when ``is_async`` (GPU only), else None after the save
    and nvrx's cleanup of older local iterations. Collective.
    """
    from megatron.core.dist_checkpointing.tensor_aware_state_dict import (
        MCoreTensorAwareStateDict,
    )

    if is_async and not torch.cuda.is_available():
        raise RuntimeError(
            "async local checkpoints need CUDA (nvidia-resiliency-ext synchronizes the GPU "
            "stream before returning); on a CPU-only machine set async_save=False"
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
    return local_manager(checkpointing_context).save(tensor_aware, iteration, is_async=is_async)


def load_local_state_dict(
    checkpointing_context: dict[str, Any] | None,
    sharded_state_dict: dict[str, Any] | None,
    *,
    algo: str = "atomic",
    parallelization_group: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Load the newest local checkpoint into ``sharded_state_dict``'s layout.

    Returns ``(state_dict, ckpt_id)`` where ``ckpt_id`` is nvrx's ``(iteration, rank,
    session_id)``. ``find_latest_local_iteration`` must have run first. Collective.
    """
    _check_cpu_algo(algo)
    intermediate, ckpt_id = local_manager(checkpointing_context).load()
    state_dict: dict[str, Any] = intermediate.to_state_dict(
        sharded_state_dict or {}, algo=algo, parallelization_group=parallelization_group
    )
    return state_dict, ckpt_id
