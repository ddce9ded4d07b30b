"""The checkpoint-manager surface of newer Megatron-Bridge releases, on Cairn's facade.

Newer Bridge training loops do not call ``save_checkpoint``/``load_checkpoint`` directly: they
build one manager per run with ``create_checkpoint_manager(cfg.checkpoint)`` and call

- ``manager.save(CheckpointSaveContext(...), callback_manager)`` at every save step,
- ``manager.load(CheckpointLoadContext(...))`` once at start-up (returns
  ``(iteration, num_floating_point_operations_so_far)``; Bridge reads ``state.train_state``),
- ``manager.finalize_async_saves(state, blocking=..., terminate=...)`` every step and at exit.

``CheckpointConfig.custom_manager_class`` names the class to build instead of
``DefaultCheckpointManager``; it is resolved as Bridge resolves it (``importlib`` of the module,
then the attribute). A malformed name raises ``ValueError``, a module or class that cannot be
found ``CheckpointManagerImportError`` (an ``ImportError``), a class that lacks one of the three
methods ``CheckpointManagerProtocolError`` (a ``TypeError``); each message names what is missing.

The facade is imported inside the methods: :mod:`cairn_agent.checkpointing` re-exports this
module, so importing it here at module level would make the two imports circular.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cairn_agent.config import CheckpointConfig
from cairn_agent.errors import CairnError

__all__ = [
    "MANAGER_METHODS",
    "CheckpointLoadContext",
    "CheckpointManager",
    "CheckpointManagerImportError",
    "CheckpointManagerProtocolError",
    "CheckpointSaveContext",
    "DefaultCheckpointManager",
    "create_checkpoint_manager",
    "resolve_manager_class",
]

MANAGER_METHODS = ("save", "load", "finalize_async_saves")
"""The methods every checkpoint manager defines (Bridge's ``CheckpointManager`` protocol)."""


class CheckpointManagerImportError(CairnError, ImportError):
    """``custom_manager_class`` names a module that does not import or a class it lacks."""


class CheckpointManagerProtocolError(CairnError, TypeError):
    """The class ``custom_manager_class`` names is not a checkpoint manager."""


@dataclass
class CheckpointSaveContext:
    """Everything one save needs (Megatron-Bridge ``CheckpointSaveContext``, same field order)."""

    state: Any
    """The run's ``GlobalState`` (config, train state, async queue)."""
    model: list[Any]
    """Model chunks to save."""
    optimizer: Any | None
    """Optimizer; None saves no optimizer state."""
    opt_param_scheduler: Any | None
    """Learning-rate scheduler; None saves none."""
    num_floating_point_operations_so_far: float
    """Cumulative model FLOPs, written to ``train_state.pt``."""
    train_data_iterator: Any | None = None
    """Iterator whose position is saved too (``save_state``), when given."""
    non_persistent_ckpt: bool = False
    """Save a non-persistent checkpoint (global or node-local, per the config)."""
    pg_collection: Any | None = None
    """Bridge's explicit process groups; Cairn takes ranks from megatron-core's parallel state,
    which Bridge initializes with the same groups, so this is accepted and not read."""
    module_name: str | None = None
    """MegatronMIMO per-module RNG namespace (Bridge >= 0.6); Cairn refuses anything but None."""


@dataclass
class CheckpointLoadContext:
    """Everything one load needs (Megatron-Bridge ``CheckpointLoadContext``, same field order)."""

    state: Any
    """The run's ``GlobalState``; its ``train_state`` is replaced by the loaded one."""
    model: list[Any]
    """Model chunks to load into."""
    optimizer: Any | None
    """Optimizer to restore; None skips optimizer state."""
    opt_param_scheduler: Any | None
    """Learning-rate scheduler to restore; None skips it."""
    strict: bool = True
    """Fail on model keys missing from the checkpoint."""
    skip_load_to_model_and_opt: bool = False
    """Read train state and metadata only; leave model and optimizer untouched."""
    pg_collection: Any | None = None
    """Accepted for Bridge compatibility and not read (see ``CheckpointSaveContext``)."""
    module_name: str | None = None
    """MegatronMIMO per-module RNG namespace; Cairn refuses anything but None."""


@runtime_checkable
class CheckpointManager(Protocol):
    """What a training loop calls to checkpoint (Megatron-Bridge ``CheckpointManager``).

    Call order per run: ``__init__`` once, ``load`` once before training, ``save`` at save
    steps, ``finalize_async_saves`` after every step and once with ``blocking=True,
    terminate=True`` at the end. Every call is collective: all ranks make it, in that order.
    """

    def __init__(self, checkpoint_config: Any) -> None: ...

    def save(self, ctx: CheckpointSaveContext, callback_manager: Any | None = None) -> None:
        """Save (sync) or schedule (async) a checkpoint of the current step."""
        ...

    def load(self, ctx: CheckpointLoadContext) -> tuple[int, float]:
        """Resume; returns ``(iteration, num_floating_point_operations_so_far)``, (0, 0) if none."""
        ...

    def finalize_async_saves(
        self, state: Any, blocking: bool = False, terminate: bool = False
    ) -> None:
        """Commit finished background saves (all of them when ``blocking``)."""
        ...


def refuse_module_name(module_name: str | None) -> None:
    """Cairn keeps one RNG state per rank; a per-module namespace would be silently lost."""
    if module_name is not None:
        raise ValueError(
            f"module_name={module_name!r}: per-module (MegatronMIMO) checkpoints are not "
            "supported by Cairn; leave module_name unset"
        )


class DefaultCheckpointManager:
    """The manager built when ``custom_manager_class`` is unset: Cairn's functional API as is.

    Owns the checkpointing context (``init_checkpointing_context``), so node-local
    checkpoints keep one nvidia-resiliency-ext manager across saves and loads.
    """

    def __init__(self, checkpoint_config: CheckpointConfig) -> None:
        from cairn_agent import checkpointing

        self.checkpoint_config = checkpoint_config
        self._context: dict[str, Any] = checkpointing.init_checkpointing_context(checkpoint_config)

    @property
    def checkpointing_context(self) -> dict[str, Any]:
        """The context handed to every save and load (local-checkpoint manager, caches)."""
        return self._context

    def save(self, ctx: CheckpointSaveContext, callback_manager: Any | None = None) -> None:
        """``save_checkpoint`` with the context's fields. ``callback_manager`` is not fired:
        use :class:`cairn_agent.bridge.CairnCheckpointManager` for Bridge's callbacks."""
        from cairn_agent import checkpointing

        refuse_module_name(ctx.module_name)
        checkpointing.save_checkpoint(
            ctx.state,
            ctx.model,
            ctx.optimizer,
            ctx.opt_param_scheduler,
            ctx.num_floating_point_operations_so_far,
            checkpointing_context=self._context,
            non_persistent_ckpt=ctx.non_persistent_ckpt,
            train_data_iterator=ctx.train_data_iterator,
        )

    def load(self, ctx: CheckpointLoadContext) -> tuple[int, float]:
        """``load_checkpoint`` with the context's fields."""
        from cairn_agent import checkpointing

        refuse_module_name(ctx.module_name)
        return checkpointing.load_checkpoint(
            ctx.state,
            ctx.model,
            ctx.optimizer,
            ctx.opt_param_scheduler,
            strict=ctx.strict,
            checkpointing_context=self._context,
            skip_load_to_model_and_opt=ctx.skip_load_to_model_and_opt,
        )

    def finalize_async_saves(
        self, state: Any, blocking: bool = False, terminate: bool = False
    ) -> None:
        """``maybe_finalize_async_save`` with this manager's config."""
        from cairn_agent import checkpointing

        checkpointing.maybe_finalize_async_save(
            state, self.checkpoint_config, blocking=blocking, terminate=terminate
        )


def resolve_manager_class(class_path: str) -> type[Any]:
    """The class ``class_path`` names, imported as Bridge does; typed errors say what is wrong."""
    module_path, _, class_name = class_path.rpartition(".")
    if not module_path or not class_name:
        raise ValueError(
            f"custom_manager_class={class_path!r} is not a fully qualified class name; write "
            "it as 'package.module.ClassName'"
        )
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise CheckpointManagerImportError(
            f"custom_manager_class={class_path!r}: module {module_path!r} cannot be imported "
            f"({exc}); check the spelling and that the package is installed in the image"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CheckpointManagerImportError(
            f"custom_manager_class={class_path!r}: module {module_path!r} has no attribute "
            f"{class_name!r}"
        )
    check_manager_class(cls, class_path)
    return cls  # type: ignore[no-any-return]


def check_manager_class(cls: Any, class_path: str) -> None:
    """Raise ``CheckpointManagerProtocolError`` naming every method ``cls`` lacks."""
    if not inspect.isclass(cls):
        raise CheckpointManagerProtocolError(
            f"custom_manager_class={class_path!r} is a {type(cls).__name__}, not a class"
        )
    missing = [name for name in MANAGER_METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise CheckpointManagerProtocolError(
            f"custom_manager_class={class_path!r} does not implement the CheckpointManager "
            f"protocol: missing method(s) {', '.join(missing)} (a manager defines "
            f"{', '.join(MANAGER_METHODS)})"
        )


def create_checkpoint_manager(checkpoint_config: Any) -> CheckpointManager:
    """The run's manager: ``custom_manager_class`` when set, else ``DefaultCheckpointManager``."""
    class_path = getattr(checkpoint_config, "custom_manager_class", None)
    if class_path is None:
        return DefaultCheckpointManager(checkpoint_config)
    manager = resolve_manager_class(class_path)(checkpoint_config)
    if not isinstance(manager, CheckpointManager):
        raise CheckpointManagerProtocolError(
            f"custom_manager_class={class_path!r}: the instance it built is not a "
            "CheckpointManager (its save, load or finalize_async_saves is not callable)"
        )
    return manager
