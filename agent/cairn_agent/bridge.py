"""Megatron-Bridge adopts Cairn with one line of config.

::

    checkpoint:
      save: /checkpoints/llama-8b
      load: /checkpoints/llama-8b
      custom_manager_class: cairn_agent.bridge.CairnCheckpointManager

Bridge then builds :class:`CairnCheckpointManager` from ``cfg.checkpoint`` and routes every
save, load and async finalize of the run through Cairn: atomic commits, the persistent async
worker, retention, cluster reporting (``CAIRN_CHECKPOINT``) and the cluster's resume point,
with the training script untouched. Bridge >= 0.6 only instantiates allow-listed module
prefixes; register Cairn's once in the launcher:
``megatron.bridge.utils.instantiate_utils.register_allowed_target_prefix("cairn_agent.")``.

How Bridge's objects are read (after a load, the loaded progress is put into Bridge's
``state.train_state`` through its own ``load_state_dict``, and ``cfg.checkpoint.finetune`` is
set when Cairn fell back to finetuning from ``pretrained_checkpoint``; nothing else is set):

- Bridge's ``CheckpointConfig`` is copied once, at construction, into Cairn's
  :class:`~cairn_agent.config.CheckpointConfig` field by field (same names), so a setting
  Cairn cannot honour (``ckpt_format="fsdp_dtensor"``, ``in_memory`` non-persistent saves)
  fails there with a ``ValueError`` that says what to change, not at the first save.
- Bridge's ``GlobalState`` gets a Cairn :class:`~cairn_agent.state.train.GlobalState` beside
  it, kept for the run: it holds the async queue and Cairn's resume bookkeeping and reads
  everything else (model, RNG and optimizer config, ``to_yaml``) from Bridge's objects, so
  ``run_config.yaml`` is Bridge's own full dump and Bridge's tools can rebuild the model.
- ``callback_manager``'s ``on_checkpoint_save`` fires once the save is durable: after a sync
  save, or at the finalize that commits an async one, as Bridge's default manager does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from typing import Any

from cairn_agent import checkpointing
from cairn_agent.config import CheckpointConfig
from cairn_agent.engine import dist
from cairn_agent.manager import (
    CheckpointLoadContext,
    CheckpointSaveContext,
    refuse_module_name,
)
from cairn_agent.state.train import GlobalState

__all__ = ["CairnCheckpointManager", "SaveCallbackContext", "cairn_checkpoint_config"]

logger = logging.getLogger(__name__)
_SAVE_EVENT = "on_checkpoint_save"


def cairn_checkpoint_config(checkpoint_config: Any) -> CheckpointConfig:
    """Cairn's ``CheckpointConfig`` with every same-named field of ``checkpoint_config``.

    Fields Cairn does not have (Bridge-only knobs) are left out; values Cairn cannot honour
    raise ``ValueError`` from Cairn's validation.
    """
    if isinstance(checkpoint_config, CheckpointConfig):
        return checkpoint_config
    values = {
        f.name: getattr(checkpoint_config, f.name)
        for f in dataclasses.fields(CheckpointConfig)
        if hasattr(checkpoint_config, f.name)
    }
    return CheckpointConfig(**values)


@dataclasses.dataclass
class SaveCallbackContext:
    """What ``on_checkpoint_save`` callbacks receive when Bridge's ``CallbackContext`` is not
    importable (same attribute names)."""

    state: Any
    model: list[Any]
    user_state: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: Any | None = None


class _BridgeConfig:
    """Bridge's ``ConfigContainer`` as Cairn reads it: Cairn's checkpoint config, the rest
    (model, RNG, optimizer, dataset, ``to_yaml``) Bridge's own."""

    def __init__(self, bridge_cfg: Any, checkpoint: CheckpointConfig) -> None:
        self._bridge_cfg = bridge_cfg
        self.checkpoint = checkpoint

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set above: model, rng, optimizer, dataset, to_yaml...
        return getattr(self._bridge_cfg, name)


class CairnCheckpointManager:
    """A Megatron-Bridge ``CheckpointManager`` that checkpoints through Cairn.

    Also accepts Cairn's own ``GlobalState`` (then nothing is adapted). Every method is
    collective: call it on every rank, in the same order.
    """

    def __init__(self, checkpoint_config: Any) -> None:
        self.checkpoint_config = cairn_checkpoint_config(checkpoint_config)
        self._context: dict[str, Any] = checkpointing.init_checkpointing_context(
            self.checkpoint_config
        )
        self._bridge_state: Any = None
        self._cairn_state: GlobalState | None = None
        # One entry per async save in flight, oldest first: the callback to fire at its commit.
        self._pending: deque[Any] = deque()

    @property
    def checkpointing_context(self) -> dict[str, Any]:
        """The context handed to every save and load (local-checkpoint manager, caches)."""
        return self._context

    def save(self, ctx: CheckpointSaveContext, callback_manager: Any | None = None) -> None:
        """Save (sync: committed on return) or schedule (async) the current step."""
        refuse_module_name(ctx.module_name)
        state = self._state_for(ctx.state)
        queue = self._queue(state)
        before = _unfinalized(queue)
        checkpointing.save_checkpoint(
            state,
            ctx.model,
            ctx.optimizer,
            ctx.opt_param_scheduler,
            float(ctx.num_floating_point_operations_so_far),
            checkpointing_context=self._context,
            non_persistent_ckpt=ctx.non_persistent_ckpt,
            train_data_iterator=ctx.train_data_iterator,
        )
        fire = _save_callback(callback_manager, ctx)
        scheduled = queue is not None and not _is_local(self.checkpoint_config, ctx)
        # Scheduling a save first commits the earlier saves that are done.
        self._fire_committed(before + int(scheduled) - _unfinalized(queue))
        if scheduled:
            self._pending.append(fire)
        elif fire is not None:
            fire()

    def load(self, ctx: CheckpointLoadContext) -> tuple[int, float]:
        """Resume through Cairn; Bridge's ``state.train_state`` holds the loaded progress."""
        refuse_module_name(ctx.module_name)
        state = self._state_for(ctx.state)
        iteration, flops = checkpointing.load_checkpoint(
            state,
            ctx.model,
            ctx.optimizer,
            ctx.opt_param_scheduler,
            strict=ctx.strict,
            checkpointing_context=self._context,
            skip_load_to_model_and_opt=ctx.skip_load_to_model_and_opt,
        )
        self._copy_back(ctx.state, state)
        return iteration, flops

    def finalize_async_saves(
        self, state: Any, blocking: bool = False, terminate: bool = False
    ) -> None:
        """Commit finished async saves; fire their ``on_checkpoint_save`` callbacks."""
        cairn_state = self._state_for(state)
        queue = self._queue(cairn_state)
        before = _unfinalized(queue)
        try:
            checkpointing.maybe_finalize_async_save(
                cairn_state, self.checkpoint_config, blocking=blocking, terminate=terminate
            )
        except Exception:
            # The failed save was taken off the queue before it raised: only the saves
            # finalized ahead of it were committed.
            self._fire_committed(before - _unfinalized(queue) - 1)
            raise
        self._fire_committed(before - _unfinalized(queue))

    def _queue(self, state: GlobalState) -> Any:
        """The async queue whose saves this manager tracks (None for sync saves)."""
        return state.async_calls_queue if self.checkpoint_config.async_save else None

    def _fire_committed(self, count: int) -> None:
        for _ in range(max(0, min(count, len(self._pending)))):
            fire = self._pending.popleft()
            if fire is not None:
                fire()

    def _state_for(self, state: Any) -> GlobalState:
        """Cairn's ``GlobalState`` for ``state``: itself, or the one kept beside Bridge's."""
        if isinstance(state, GlobalState):
            return state
        if self._cairn_state is None or self._bridge_state is not state:
            self._bridge_state = state
            view = _BridgeConfig(state.cfg, self.checkpoint_config)
            self._cairn_state = GlobalState(view)  # type: ignore[arg-type]
        # Bridge may have replaced its train state (it does on load): always save the current one.
        self._cairn_state.train_state = state.train_state
        return self._cairn_state

    def _copy_back(self, bridge_state: Any, cairn_state: GlobalState) -> None:
        if bridge_state is cairn_state:
            return
        loaded = cairn_state.train_state
        target = bridge_state.train_state
        if target is not loaded:
            target.load_state_dict(loaded.state_dict())
        # Cairn switches to finetuning when only pretrained_checkpoint held weights; Bridge's
        # loop reads that flag from its own config afterwards.
        if self.checkpoint_config.finetune and hasattr(bridge_state.cfg.checkpoint, "finetune"):
            bridge_state.cfg.checkpoint.finetune = True
        cairn_state.train_state = target


def _unfinalized(queue: Any) -> int:
    return 0 if queue is None else int(queue.num_unfinalized())


def _is_local(ckpt: CheckpointConfig, ctx: CheckpointSaveContext) -> bool:
    """Node-local saves are written synchronously (see ``flows.local``)."""
    return ctx.non_persistent_ckpt and ckpt.non_persistent_ckpt_type == "local"


def _save_callback(callback_manager: Any | None, ctx: CheckpointSaveContext) -> Any:
    """A thunk firing ``on_checkpoint_save`` on ``callback_manager``, or None when none listens."""
    if callback_manager is None or not callback_manager.has_callbacks(_SAVE_EVENT):
        return None
    context = _callback_context(callback_manager, ctx)

    def fire() -> None:
        logger.debug("rank %d: firing %s", dist.get_rank(), _SAVE_EVENT)
        callback_manager.fire(_SAVE_EVENT, context)

    return fire


def _callback_context(callback_manager: Any, ctx: CheckpointSaveContext) -> Any:
    user_state = getattr(callback_manager, "user_state", {})
    try:
        from megatron.bridge.training.callbacks import CallbackContext
    except ImportError:  # Bridge not installed (Cairn's own loop): same attribute names
        return SaveCallbackContext(
            state=ctx.state, model=ctx.model, user_state=user_state, optimizer=ctx.optimizer
        )
    return CallbackContext(
        state=ctx.state, model=ctx.model, user_state=user_state, optimizer=ctx.optimizer
    )
