"""Drop-in replacement of ``megatron.bridge.training.checkpointing`` (the seed API).

Every function, class and constant of the seed exists here under the same name with the same
parameters and defaults. Where Megatron-Bridge exits the process or publishes non-atomically,
this module raises a typed error from :mod:`cairn_agent.errors` and commits atomically:

- the tracker is replaced atomically and only after the checkpoint is committed;
- a garbage tracker raises ``TrackerCorruptError`` (Bridge calls ``sys.exit()`` with status 0);
- a corrupt newest checkpoint falls back, loudly, to the previous valid one;
- ``most_recent_k`` retention runs after publication and never deletes the tracker's target.

Cairn additions, all optional: ``load_checkpoint(..., train_data_iterator=it)`` restores the
dataloader position too; after a load, ``state.skipped_checkpoints`` lists the checkpoints that
were passed over as unloadable and ``state.dataloader_state_dir`` where the dataloader state is.
A Megatron-Bridge ``GlobalState``/``ConfigContainer`` works for synchronous saves and loads
(async saves need :class:`cairn_agent.state.train.GlobalState`).

The work itself lives in :mod:`cairn_agent.flows.save`, :mod:`cairn_agent.flows.candidates` and
:mod:`cairn_agent.state.model`; this module keeps the seed's names and the module globals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn_agent import boundary, saving
from cairn_agent.config import CheckpointConfig
from cairn_agent.engine import dist
from cairn_agent.engine.collectives import on_coordinator
from cairn_agent.errors import CheckpointNotFoundError
from cairn_agent.flows import candidates as load_flow
from cairn_agent.flows import load as resume
from cairn_agent.flows.base_load import (
    _load_base_checkpoint,
    _load_global_dist_base_checkpoint,
    _load_model_weights_from_checkpoint,
    _load_non_persistent_base_checkpoint,
)
from cairn_agent.flows.common import CheckpointType
from cairn_agent.flows.non_persistent import (
    _get_non_persistent_iteration,
    cleanup_old_non_persistent_checkpoint,
    init_checkpointing_context,
)
from cairn_agent.manager import (
    CheckpointLoadContext,
    CheckpointManager,
    CheckpointSaveContext,
    DefaultCheckpointManager,
    create_checkpoint_manager,
)
from cairn_agent.state import compose
from cairn_agent.state.dataloader import maybe_load_dataloader_state, maybe_save_dataloader_state
from cairn_agent.state.legacy import (
    _extract_megatron_lm_args_from_state_dict,
    _get_train_state_from_state_dict,
    _transpose_first_dim,
)
from cairn_agent.state.model import (
    _generate_model_state_dict,
    _load_model_state_dict,
    as_model_list,
    generate_state_dict,
)
from cairn_agent.state.peft import _is_model_section, apply_peft_adapter_filter_to_state_dict
from cairn_agent.state.rng import get_rng_state
from cairn_agent.state.run import SavedObjects, run_of
from cairn_agent.state.run_config import view
from cairn_agent.state.train import GlobalState
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

__all__ = [
    "TRACKER_PREFIX",
    "CheckpointLoadContext",
    "CheckpointManager",
    "CheckpointSaveContext",
    "CheckpointType",
    "DefaultCheckpointManager",
    "_build_sharded_state_dict_metadata",
    "_extract_megatron_lm_args_from_state_dict",
    "_generate_model_state_dict",
    "_get_non_persistent_iteration",
    "_get_train_state_from_state_dict",
    "_is_model_section",
    "_load_base_checkpoint",
    "_load_checkpoint_from_path",
    "_load_global_dist_base_checkpoint",
    "_load_model_state_dict",
    "_load_model_weights_from_checkpoint",
    "_load_non_persistent_base_checkpoint",
    "_transpose_first_dim",
    "apply_peft_adapter_filter_to_state_dict",
    "cleanup_old_non_persistent_checkpoint",
    "create_checkpoint_manager",
    "find_checkpoint_rank_0",
    "generate_state_dict",
    "get_checkpoint_version",
    "get_rng_state",
    "init_async_checkpoint_worker",
    "init_checkpointing_context",
    "is_empty_async_queue",
    "load_checkpoint",
    "maybe_finalize_async_save",
    "maybe_save_dataloader_state",
    "read_metadata",
    "save_checkpoint",
    "save_due",
    "schedule_async_save",
    "set_checkpoint_version",
]

TRACKER_PREFIX = layout.TRACKER_PREFIX
_CHECKPOINT_VERSION: float | None = None
logger = logging.getLogger(__name__)
_NON_PERSISTENT_CKPT_SUBDIR = layout.NON_PERSISTENT_SUBDIR


def set_checkpoint_version(value: float) -> None:
    """Set the checkpoint version of the loaded checkpoint; a different second value raises."""
    global _CHECKPOINT_VERSION
    if _CHECKPOINT_VERSION is not None and _CHECKPOINT_VERSION != value:
        raise ValueError(
            f"checkpoint versions do not match: already loaded {_CHECKPOINT_VERSION}, now {value}"
        )
    _CHECKPOINT_VERSION = value


def get_checkpoint_version() -> float | None:
    """The checkpoint version of the loaded checkpoint, or None before any load."""
    return _CHECKPOINT_VERSION


def find_checkpoint_rank_0(
    checkpoints_path: str, iteration: int, release: bool = False
) -> str | None:
    """The iteration directory if it is a complete distributed checkpoint, else None."""
    directory = layout.iteration_dir(checkpoints_path, iteration, release)
    return str(directory) if (directory / layout.METADATA_JSON).is_file() else None


def read_metadata(tracker_filename: str) -> tuple[int, bool]:
    """``(iteration, release)`` from a tracker file, the iteration maximised across ranks.

    Raises ``CheckpointNotFoundError`` when the file is missing and ``TrackerCorruptError``
    (naming the file) when it is garbage; never exits the process. Collective when a process
    group exists (works on gloo and NCCL alike).
    """
    value = read_tracker(tracker_filename)
    if value is None:
        raise CheckpointNotFoundError(f"{tracker_filename}: tracker file does not exist")
    # Every rank joins the reduction, release or not, so the collectives always match.
    agreed = dist.all_reduce_max_int(value.iteration)
    if agreed != value.iteration:
        logger.warning(
            "rank %d read iteration %d from %s but another rank read %d; using %d",
            dist.get_rank(),
            value.iteration,
            tracker_filename,
            agreed,
            agreed,
        )
    return (agreed, False) if agreed != value.iteration else (value.iteration, value.release)


def schedule_async_save(global_state: GlobalState, async_request: Any) -> None:
    """Hand ``async_request`` (an ``AsyncRequest``) to the state's async queue."""
    saving.async_queue(global_state).schedule(async_request)


def maybe_finalize_async_save(
    global_state: GlobalState,
    ckpt_cfg: CheckpointConfig,
    blocking: bool = False,
    terminate: bool = False,
) -> None:
    """Commit finished async saves (all of them when ``blocking``). Collective; call on every rank.

    Raises ``AsyncSaveError`` on every rank when a background save failed on any rank.

    For a job that names a Checkpoint this call is also the step boundary at which the ranks
    agree on the Checkpoint's policy and answer its save requests (``cairn_agent.boundary``).
    """
    boundary.at_boundary(global_state)
    if ckpt_cfg.async_save or getattr(global_state, "_async_calls_queue", None) is not None:
        saving.finalize(global_state, blocking=blocking, terminate=terminate)


def save_due(state: GlobalState) -> boundary.SaveDue:
    """Cairn addition: is a save due at ``state.train_state.step`` under the effective policy?

    For training loops that keep their own cadence: call it once per step, on every rank
    (collective), after the step's optimizer update and ``train_state.step`` increment::

        due = checkpointing.save_due(state)
        if due.persistent or due.non_persistent:
            save_checkpoint(..., non_persistent_ckpt=not due.persistent)

    It follows the Checkpoint's spec live (``spec.save.interval`` edited mid-run applies from
    the next step on every rank) and performs the saves the cluster asks for itself.
    """
    return boundary.save_due(state)


def is_empty_async_queue(global_state: GlobalState) -> bool:
    """True when no async save is in flight (consistent across ranks)."""
    queue = getattr(global_state, "_async_calls_queue", None)
    return True if queue is None else bool(queue.is_empty())


def init_async_checkpoint_worker(global_state: GlobalState) -> None:
    """Start the persistent async worker now when async saving is configured."""
    global_state.initialize_async_checkpoint_worker()


def save_checkpoint(
    state: GlobalState,
    model: list[Any],
    optimizer: Any | None,
    opt_param_scheduler: Any | None,
    num_floating_point_operations_so_far: float,
    checkpointing_context: dict[str, Any] | None = None,
    pipeline_rank: int | None = None,
    tensor_rank: int | None = None,
    non_persistent_ckpt: bool = False,
    train_data_iterator: Any | None = None,
    preprocess_common_state_dict_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Save model, optimizer, scheduler, RNG, train state (and dataloader state) at the current step.

    Collective. Sync: returns after the checkpoint is committed, the tracker published and
    retention applied. Async: returns once the save is scheduled; it is committed by a later
    ``maybe_finalize_async_save``. ``pipeline_rank``/``tensor_rank`` and
    ``preprocess_common_state_dict_fn`` are accepted for compatibility: ranks come from the
    process groups and the common state is written by rank 0 only, so neither is needed.
    """
    ckpt = state.cfg.checkpoint
    if ckpt.async_save and not is_empty_async_queue(state):
        logger.warning(
            "rank %d: scheduling a save while an earlier async save is in flight", dist.get_rank()
        )
    saving.save(
        state,
        model,
        optimizer,
        opt_param_scheduler,
        float(num_floating_point_operations_so_far),
        checkpointing_context=checkpointing_context,
        non_persistent=non_persistent_ckpt,
        train_data_iterator=train_data_iterator,
    )


def _has_checkpoint(ckpt: CheckpointConfig, load_dir: str | None) -> bool:
    """Rank 0 decides whether ``load_dir`` holds anything resumable; every rank gets the answer."""

    def look() -> bool:
        if load_dir is None or not Path(load_dir).is_dir():
            return False
        path = Path(load_dir)
        roots = [path, *load_flow.non_persistent_roots(ckpt, path)]
        return (
            load_flow.is_iteration_dir(path)
            or layout.tracker_path(path).exists()
            or any(committed_iterations(root) for root in roots)
        )

    return bool(on_coordinator(look))


def _choose_load_dir(ckpt: CheckpointConfig) -> tuple[str | None, bool]:
    """``(directory, from_pretrained)``: ``load``, or ``pretrained_checkpoint`` when load is empty."""
    if ckpt.pretrained_checkpoint is None or _has_checkpoint(ckpt, ckpt.load):
        return ckpt.load, False
    if not _has_checkpoint(ckpt, ckpt.pretrained_checkpoint):
        raise CheckpointNotFoundError(
            f"no checkpoint in load={ckpt.load} nor in pretrained_checkpoint="
            f"{ckpt.pretrained_checkpoint}; fix one of the paths"
        )
    logger.info("no checkpoint in %s; finetuning from %s", ckpt.load, ckpt.pretrained_checkpoint)
    ckpt.finetune = True  # as in Megatron-Bridge: later code reads the flag from the config
    return ckpt.pretrained_checkpoint, True


def load_checkpoint(
    state: GlobalState,
    model: list[Any],
    optimizer: Any | None,
    opt_param_scheduler: Any | None,
    strict: bool = True,
    checkpointing_context: dict[str, Any] | None = None,
    skip_load_to_model_and_opt: bool = False,
    *,
    train_data_iterator: Any | None = None,
) -> tuple[int, float]:
    """Resume from ``checkpoint.load`` (or finetune from ``pretrained_checkpoint``).

    Returns ``(iteration, num_floating_point_operations_so_far)``; ``(0, 0)`` when there is
    nothing to load, unless ``exit_on_missing_checkpoint`` asks for ``CheckpointNotFoundError``.
    With ``train_data_iterator`` (a Cairn addition) its saved position is restored too;
    otherwise ``state.dataloader_state_dir`` says where that state lives. Collective.
    """
    ckpt = state.cfg.checkpoint
    # The Checkpoint's spec applies before the load (e.g. verification.deep); its save
    # requests only after it, once there is model state worth saving.
    boundary.at_boundary(state, act=False)
    if isinstance(state, GlobalState):
        # The async writer starts (and imports) while the load runs: no first-save start-up.
        init_async_checkpoint_worker(state)
    _remember(state, model, optimizer, opt_param_scheduler, checkpointing_context)
    load_dir, from_pretrained = _choose_load_dir(ckpt)
    if load_dir is None:
        return load_flow.nothing_to_load(ckpt, load_dir)
    iteration, flops = _load_checkpoint_from_path(
        load_dir,
        state,
        model,
        optimizer,
        opt_param_scheduler,
        strict,
        checkpointing_context,
        skip_load_to_model_and_opt,
        ignore_ckpt_step=from_pretrained,
    )
    if train_data_iterator is not None and not ckpt.finetune:
        maybe_load_dataloader_state(
            train_data_iterator, iteration, run_of(state).dataloader_state_dir
        )
    return iteration, flops


def _remember(state: GlobalState, model: Any, optimizer: Any, scheduler: Any, context: Any) -> None:
    """The objects a save the cluster asks for (``spec.saveNow``, a preemption) is made of."""
    run_of(state).objects = SavedObjects(as_model_list(model), optimizer, scheduler, None, context)


def _load_checkpoint_from_path(
    load_dir: str,
    state: GlobalState,
    model: list[Any],
    optimizer: Any | None,
    opt_param_scheduler: Any | None,
    strict: bool = True,
    checkpointing_context: dict[str, Any] | None = None,
    skip_load_to_model_and_opt: bool = False,
    *,
    ignore_ckpt_step: bool = False,
) -> tuple[int, float]:
    """Load the checkpoint ``load_dir`` resolves to (or the iteration dir it names). Collective."""
    ckpt = state.cfg.checkpoint
    iteration, flops, version = resume.load(
        state,
        load_dir,
        as_model_list(model),
        optimizer,
        opt_param_scheduler,
        strict=strict,
        skip_model_and_opt=skip_load_to_model_and_opt,
        pinned=None if ignore_ckpt_step else ckpt.ckpt_step,
        checkpointing_context=checkpointing_context,
    )
    run = run_of(state)
    if run.resumed_iteration is not None or ckpt.finetune:
        set_checkpoint_version(version)
        run.dataloader_state_dir = _dataloader_load_dir(state, load_dir)
        if checkpointing_context is not None:
            checkpointing_context["dataloader_state_dir"] = run.dataloader_state_dir
    return iteration, flops


def _dataloader_load_dir(state: GlobalState, load_dir: str) -> str:
    configured = view(state.cfg).dataloader_load
    root = Path(load_dir)
    if load_flow.is_iteration_dir(root):
        root = root.parent
    return configured or str(root / layout.DATALOADER_SUBDIR)


def _build_sharded_state_dict_metadata(
    use_distributed_optimizer: bool, ckpt_fully_parallel_save: Any
) -> dict[str, Any]:
    """Content metadata for sharded-state-dict versioning (model and optimizer layouts).

    ``ckpt_fully_parallel_save`` may also be a ``CheckpointConfig`` (newer Bridge signature).
    """
    if isinstance(ckpt_fully_parallel_save, CheckpointConfig):
        cfg = ckpt_fully_parallel_save
        return compose.build_sharded_state_dict_metadata(
            use_distributed_optimizer,
            cfg.fully_parallel_save,
            fully_reshardable=cfg.dist_ckpt_optim_fully_reshardable,
            mem_efficient=cfg.distrib_optim_fully_reshardable_mem_efficient,
        )
    return compose.build_sharded_state_dict_metadata(
        use_distributed_optimizer, bool(ckpt_fully_parallel_save)
    )
