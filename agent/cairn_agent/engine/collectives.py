"""One family of agreement primitives: every rank agrees, or every rank raises the same error.

Two shapes cover every cross-rank decision Cairn makes:

- :func:`on_coordinator` — the coordinator (rank 0 of ``group``) does the work alone (reads a
  tracker, creates a staging dir, commits) and broadcasts the result; when it failed, every rank
  raises an error of the same type with the same message. A one-rank failure therefore never
  leaves the other ranks waiting in the next collective.
- :func:`agree` — every rank runs its own part; all ranks learn whether it worked everywhere.
  :func:`run_agreed` raises ``CommitError`` everywhere on failure; :func:`agreed_outcome`
  returns the outcome so the caller can classify it (the load fallback does).

Built on :mod:`cairn_agent.engine.dist`; usable without a process group (a group of one).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from cairn_agent.engine.dist import (
    all_reduce_max_ints,
    all_reduce_min_int,
    broadcast_object,
    get_rank,
    is_distributed,
)
from cairn_agent.errors import CommitError

T = TypeVar("T")

COORDINATOR = 0
"""The rank (within the group) that acts alone for the group: commits, publishes, reads."""


def describe_error(error: BaseException) -> str:
    """One line naming the error; for DCP's ``CheckpointException``, each failed rank's error."""
    if isinstance(error, CheckpointException):
        causes = "; ".join(
            f"rank {rank}: {type(exc).__name__}: {exc}"
            for rank, (exc, _) in sorted(error.failures.items())
        )
        return f"DCP failed on ranks {sorted(error.failures)} ({causes})"
    return f"{type(error).__name__}: {error}"


def all_agree(ok: bool, group: dist.ProcessGroup | None = None) -> bool:
    """True on every rank iff ``ok`` is True on every rank."""
    return all_reduce_min_int(int(bool(ok)), group) == 1


def _portable(error: Exception) -> Exception:
    """``error`` itself when it survives pickling (it is broadcast), else a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure means "send a description instead"
        return RuntimeError(describe_error(error))
    return error


def on_coordinator(fn: Callable[[], T], group: dist.ProcessGroup | None = None) -> T:
    """The coordinator runs ``fn``; every rank returns its result or raises its error.

    The error re-raised on the other ranks is the coordinator's exception, unpickled (same type,
    same message); the coordinator re-raises its original exception with its traceback.
    """
    result: T | None = None
    error: Exception | None = None
    if get_rank(group) == COORDINATOR:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - broadcast, then raised on every rank
            error = exc
    message = (result, _portable(error) if error is not None else None)
    shared_result, shared_error = broadcast_object(message, COORDINATOR, group)
    if error is not None:
        raise error
    if shared_error is not None:
        raise shared_error
    return shared_result  # type: ignore[no-any-return]


def agreed_outcome(
    fn: Callable[[], T], group: dist.ProcessGroup | None = None
) -> tuple[T | None, BaseException | None, bool]:
    """Run ``fn`` on every rank: ``(result, own error, ok everywhere)``; never raises."""
    result, error = _attempt(fn)
    return result, error, all_agree(error is None, group)


def _attempt(fn: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """``(fn(), None)``, or ``(None, the error)`` when it raised."""
    try:
        return fn(), None
    # DCP's CheckpointException derives from BaseException, not Exception.
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - returned to the caller
        return None, exc


def run_agreed(step: str, fn: Callable[[], T], group: dist.ProcessGroup | None = None) -> T:
    """Run the rank-local ``fn``; if it failed on any rank, every rank raises ``CommitError``.

    Every rank calls this at the same point, so no rank walks on into the next collective while
    another has left: a one-rank failure becomes a clean error on all ranks instead of a hang.
    """
    result, error, ok = agreed_outcome(fn, group)
    if ok:
        return result  # type: ignore[return-value]
    _raise_failed(step, error, group)


def run_agreed_with_vote(
    step: str,
    fn: Callable[[], T],
    vote: Callable[[T], bool],
    group: dist.ProcessGroup | None = None,
) -> tuple[T, bool]:
    """:func:`run_agreed`, plus a yes/no question every rank answers about its result.

    Returns ``fn``'s result and whether ``vote(result)`` was true on every rank. The failure
    agreement and the vote travel in one all-reduce: on a path where every collective is a
    stall of the training loop, this saves one round trip.
    """

    def run_and_vote() -> tuple[T, bool]:
        result = fn()
        return result, bool(vote(result))

    outcome, error = _attempt(run_and_vote)
    yes = outcome is not None and outcome[1]
    failed, dissent = all_reduce_max_ints([int(error is not None), int(not yes)], group)
    if failed or outcome is None:
        _raise_failed(step, error, group)
    return outcome[0], not dissent


def _raise_failed(
    step: str, error: BaseException | None, group: dist.ProcessGroup | None
) -> NoReturn:
    rank = get_rank(group)
    if error is not None:
        raise CommitError(f"{step} failed on rank {rank}: {describe_error(error)}") from error
    raise CommitError(f"{step} failed on another rank (this rank {rank} succeeded)")


class LaggedMax:
    """An element-wise MAX agreement whose communication overlaps the step that follows it.

    For a per-step agreement whose cost must not show in step time: :meth:`exchange` hands this
    rank's values to a non-blocking all-reduce on a private gloo group and returns the result of
    the *previous* call's all-reduce, complete by now (it ran while the step computed). Every rank
    calls it at the same points, so every rank acts on the same result at the same step, one
    step after the values were offered. :meth:`exchange_now` is the blocking form, for the first
    agreement of a run. A private CPU group keeps it off the training group's queue and, on
    NCCL jobs, off the GPU (no device sync per step).
    """

    def __init__(self) -> None:
        self._group = dist.new_group(backend="gloo") if is_distributed() else None
        self._pending: tuple[Any, torch.Tensor] | None = None
        self._offered: list[int] | None = None  # without a process group: the last offer

    def exchange_now(self, values: list[int]) -> list[int]:
        """COLLECTIVE, blocking: the MAX of ``values`` over ranks (a lagged round is drained)."""
        self._drain()
        if self._group is None:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._group)
        return [int(v) for v in tensor.tolist()]

    def exchange(self, values: list[int]) -> list[int] | None:
        """COLLECTIVE: offer ``values``; the MAX of the previous offers (None on the first)."""
        previous = self._drain()
        if self._group is None:
            self._offered = list(values)
            return previous
        tensor = torch.tensor(values, dtype=torch.int64)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        self._pending = (work, tensor)
        return previous

    def _drain(self) -> list[int] | None:
        """The result of the round in flight (waited for), if any."""
        if self._group is None:
            offered, self._offered = self._offered, None
            return offered
        if self._pending is None:
            return None
        work, tensor = self._pending
        self._pending = None
        work.wait()
        return [int(v) for v in tensor.tolist()]
