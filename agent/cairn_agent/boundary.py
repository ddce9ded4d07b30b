"""What the job does at a step boundary once its ranks agreed (``flows.control``).

The training loop reaches a boundary through ``maybe_finalize_async_save`` (Megatron-Bridge's
loop calls it every iteration) or :func:`save_due` (scripts that keep their own cadence). In
order, every rank alike:

1. a stalled async save (in flight longer than ``saveStallSeconds``) is aborted: the worker is
   killed, the save fails loudly with nothing of it visible, training goes on;
2. a retention policy that changed is applied to the persistent root at once (rank 0);
3. a ``spec.saveNow`` request is answered with a persistent save of this step, committed before
   the boundary returns, and the answer is reported in ``status.lastSaveRequest``;
4. a SIGTERM on any rank ends in a final save and ``PreemptedExit`` (``cairn_agent.preemption``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from cairn_agent import preemption, saving
from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.errors import AsyncSaveError
from cairn_agent.flows import save as save_flow
from cairn_agent.flows.control import Control, StepDecision, control_of
from cairn_agent.resource import contract
from cairn_agent.resource.times import now_time
from cairn_agent.state.run import run_of

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SaveDue:
    """What the effective policy says is due at this step (``bool()``: any save due)."""

    persistent: bool
    """A persistent save is due (``step % save_interval == 0``)."""
    non_persistent: bool
    """A non-persistent save is due (``step % non_persistent_save_interval == 0``)."""
    saved: bool
    """Cairn already saved this step (answering the cluster's save request)."""

    def __bool__(self) -> bool:
        return self.persistent or self.non_persistent


def at_boundary(state: Any, *, act: bool = True) -> StepDecision | None:
    """COLLECTIVE: agree with the other ranks and act; None when no Checkpoint governs.

    ``act=False`` only agrees on (and applies) the policy: before a load, when there is no
    model state yet worth saving.
    """
    control = control_of(state)
    if control is None:
        return None
    if not control.handler_installed:
        control.handler_installed = True  # one attempt: it only fails off the main thread
        preemption.install_handler(control)
    decision = control.boundary(state)
    if not act:
        return decision
    if decision.stalled:
        _abort_stalled(state, decision)
    if decision.retention_changed:
        reporting.deleted(state, save_flow.retain_now(state))
    if decision.save_request is not None:
        _answer_save_request(state, control, decision)
    if decision.stop:
        preemption.final_save_and_exit(state, control)
    return decision


def save_due(state: Any) -> SaveDue:
    """COLLECTIVE: is a save due at the current ``state.train_state.step``?"""
    step = int(state.train_state.step)
    at_boundary(state)
    control = run_of(state).control
    saved = control is not None and control.saved_at == step
    ckpt = state.cfg.checkpoint
    persistent = _every(step, ckpt.save_interval) and not saved
    non_persistent = _every(step, ckpt.non_persistent_save_interval) and not (persistent or saved)
    return SaveDue(persistent=persistent, non_persistent=non_persistent, saved=saved)


def _every(step: int, interval: int | None) -> bool:
    return interval is not None and interval > 0 and step > 0 and step % interval == 0


def _abort_stalled(state: Any, decision: StepDecision) -> None:
    queue = getattr(state, "_async_calls_queue", None)
    # The same answer on every rank: saves are scheduled and finalized collectively.
    if queue is None or not queue.num_unfinalized():
        return
    seconds = decision.policy.save_stall_seconds
    queue.abort_in_flight(f"save stalled: in flight longer than saveStallSeconds={seconds}")
    try:
        queue.maybe_finalize(blocking=True)
    except AsyncSaveError as exc:
        # Tolerated on purpose: the stalled save is gone (nothing of it visible, the tracker
        # unchanged); training goes on and the next save starts a fresh worker.
        logger.error("rank %d: aborted a stalled async save: %s", dist.get_rank(), exc)
    reporting.save_phase(state, None, None, is_async=True)


def _answer_save_request(state: Any, control: Control, decision: StepDecision) -> None:
    request = decision.save_request
    if request == control.handled_request:
        return  # answered earlier at this boundary (the decision is cached per step)
    step = int(state.train_state.step)
    answer: dict[str, Any] = {
        "requestId": request,
        "reason": decision.policy.save_request_reason or "",
        "requestedIteration": step,
    }
    started = time.monotonic()
    outcome = saving.save_committed(state, why=f"the cluster asked: {request}")
    control.handled_request = request
    control.saved_at = step if outcome is None else control.saved_at
    answer |= {"iteration": step, "saveSeconds": round(time.monotonic() - started, 3)}
    if outcome is None:
        _report(state, answer | {"outcome": "Committed", "committedAt": now_time()})
    else:
        _report(state, answer | {"outcome": "Failed", "message": outcome})


def _report(state: Any, answer: dict[str, Any]) -> None:
    reporting.fields(state, {contract.LAST_SAVE_REQUEST: answer})
