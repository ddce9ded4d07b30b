"""What the flows hand each other: checkpoint kinds, load plans, and the readability verdict.

The load flow (``flows.load``) orchestrates the global candidates (``flows.candidates``) and the
node-local tier (``flows.local``); both produce a :class:`Loaded` through the same types and the
same agreement, so neither imports the other.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path
from typing import Any, TypeVar

from cairn_agent.engine.collectives import agreed_outcome, all_agree, describe_error
from cairn_agent.errors import CheckpointCorruptError, CheckpointMismatchError
from cairn_agent.state.train import TrainState
from cairn_agent.storage.resolve import LoadCandidate

T = TypeVar("T")


class CheckpointType(Enum):
    """Types of checkpoints to save."""

    LOCAL = auto()
    """Node-local non-persistent checkpoint (nvidia-resiliency-ext layout)."""
    GLOBAL = auto()
    """Shared-storage ``torch_dist`` checkpoint (persistent or global non-persistent)."""
    FSDP_DTENSOR = auto()
    """Plain torch DCP ``fsdp_dtensor`` checkpoint (recognised, not written by Cairn)."""


@dataclass
class Inspected:
    """What the rank-local reads of one candidate found."""

    candidate: LoadCandidate
    common: dict[str, Any]
    train_state: TrainState | None
    run_config: dict[str, Any] | None
    dcp_keys: frozenset[str]


@dataclass(frozen=True)
class LoadPlan:
    """Which parts of the checkpoint are read and applied."""

    model: bool
    optim: bool
    rng: bool
    rerun: bool


@dataclass
class Loaded:
    """A candidate that was read on every rank."""

    inspected: Inspected
    plan: LoadPlan
    state_dict: dict[str, Any]


def _unreadable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this checkpoint's files cannot be read": fall back to an older one.

    A shape or key mismatch between the model and the checkpoint is deliberately absent: it is
    the caller's bug (wrong model config), and resuming silently from an older checkpoint of
    the same wrong shape would hide it. megatron-core reports those as ``CheckpointingException``
    and DCP as a ``CheckpointException`` wrapping ``ValueError``/``RuntimeError`` per rank;
    :func:`is_unreadable` looks inside the latter.
    """
    return (CheckpointCorruptError, OSError, EOFError, pickle.UnpicklingError)


def is_unreadable(error: BaseException) -> bool:
    """True when ``error`` says the checkpoint's bytes are bad, not that the caller is wrong."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(error, CheckpointException):
        causes = [exc for exc, _ in error.failures.values()]
        return bool(causes) and all(is_unreadable(exc) for exc in causes)
    if isinstance(error, _unreadable_errors()):
        return True
    # torch.load of a truncated or garbled file raises a RuntimeError naming the zip archive.
    return isinstance(error, RuntimeError) and _looks_like_bad_archive(str(error))


def _dcp_errors() -> tuple[type[BaseException], ...]:
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from torch.distributed.checkpoint.api import CheckpointException

    return (CheckpointException, CheckpointingException)


def _looks_like_bad_archive(message: str) -> bool:
    markers = ("PytorchStreamReader", "zip archive", "unexpected EOF", "invalid load key")
    return any(marker in message for marker in markers)


def agree_readable(step: str, fn: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """Run ``fn`` on every rank: ``(result, None)`` if it worked everywhere, else ``(None, error)``.

    A failure that is not "unreadable" on any rank (a mismatch, a bug) is raised on every rank
    instead of being returned, so the caller never falls back past it.
    """
    result, error, ok = agreed_outcome(fn)
    if ok:
        return result, None
    if not all_agree(error is None or is_unreadable(error)):
        if error is None:
            raise CheckpointMismatchError(
                f"{step} failed on another rank with an error that is not a corrupt checkpoint "
                "(see that rank's log)"
            )
        if isinstance(error, Exception) and not isinstance(error, _dcp_errors()):
            raise error  # a bug of ours or the caller's: its own type and traceback
        raise CheckpointMismatchError(
            f"{step}: the checkpoint does not fit this model: {describe_error(error)}; the "
            "checkpoint is not corrupt, so no older one is tried: fix the model configuration "
            "(or load a checkpoint of this model)"
        ) from error
    return None, error or CheckpointCorruptError(Path(step), "failed on another rank")
