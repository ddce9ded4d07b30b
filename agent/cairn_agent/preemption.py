"""Save before preemption: SIGTERM ends in a committed checkpoint of the step reached, then exit.

The handler (installed on every rank when the job names a Checkpoint, or with
``CheckpointConfig.save_on_sigterm``) only sets a flag and notes the deadline: a signal handler
must not save (it may interrupt a collective). At the next step boundary one all-reduce tells
every rank that some rank was asked to stop (``flows.control``), so a signal that reached one
rank stops all of them at the same step. Then, on every rank alike:

1. an async save in flight is finalized (committed, or failed loudly);
2. unless this step is already committed, a persistent save of it is made and committed —
   skipped up front when the measured save time (p95 of recent saves, start to commit) does not
   fit the budget left (grace period minus a margin): a save cut off by the kubelet's SIGKILL
   would leave nothing visible anyway, but skipping says why in status;
3. the answer goes to ``status.lastSaveRequest`` (request ``sigterm-<generation>-<step>``) and
   the reporter is flushed within the budget;
4. :class:`~cairn_agent.errors.PreemptedExit` (exit code 143) is raised.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from cairn_agent import saving
from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.errors import AsyncSaveError, PreemptedExit
from cairn_agent.flows.control import Control
from cairn_agent.resource import contract
from cairn_agent.resource.times import now_time
from cairn_agent.state.run import run_of
from cairn_agent.storage.tracker import read_tracker

logger = logging.getLogger(__name__)

GRACE_ENV = "CAIRN_TERMINATION_GRACE_SECONDS"
"""The pod's ``terminationGracePeriodSeconds`` (set it to the same value in the pod spec)."""
DEFAULT_GRACE_S = 30.0
_MARGIN_FRACTION = 0.1
_MIN_MARGIN_S = 2.0


def grace_seconds(environ: dict[str, str] | None = None) -> float:
    """The grace period from ``CAIRN_TERMINATION_GRACE_SECONDS`` (default 30 s)."""
    raw = (os.environ if environ is None else environ).get(GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0 or not math.isfinite(value):
        raise ValueError(f"{GRACE_ENV}={raw!r} must be a positive number of seconds")
    return value


def budget_after(signalled_at: float, grace: float) -> float:
    """The monotonic time by which the final save must be committed."""
    return signalled_at + grace - max(_MIN_MARGIN_S, _MARGIN_FRACTION * grace)


def install_handler(control: Control) -> bool:
    """Route SIGTERM to ``control`` (chaining a Python handler already installed).

    Only the main thread may install signal handlers; elsewhere this logs and returns False.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.warning("not in the main thread: SIGTERM will not trigger a final save")
        return False
    grace = grace_seconds()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not control.stop_requested.is_set():
            control.stop_deadline = budget_after(time.monotonic(), grace)
            control.stop_requested.set()
        # A handler someone installed before us still runs; the default one (terminate now)
        # and SIG_IGN do not: terminating is what this handler defers to the next boundary.
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    logger.info("rank %d: SIGTERM saves this step and exits (grace %.0f s)", dist.get_rank(), grace)
    return True


def final_save_and_exit(state: Any, control: Control) -> None:
    """COLLECTIVE (every rank, same boundary): the steps of the module docstring; never returns."""
    step = int(state.train_state.step)
    deadline = control.stop_deadline or budget_after(time.monotonic(), grace_seconds())
    request = f"sigterm-{run_of(state).generation}-{step}"
    answer: dict[str, Any] = {"requestId": request, "reason": "SIGTERM", "requestedIteration": step}
    logger.warning(
        "rank %d: asked to stop at step %d; %.1f s left",
        dist.get_rank(),
        step,
        deadline - time.monotonic(),
    )
    _finalize_in_flight(state)
    started = time.monotonic()
    outcome = _final_save(state, step, deadline)
    answer |= {"iteration": step, "saveSeconds": round(time.monotonic() - started, 3)}
    if outcome is None:
        answer |= {"outcome": "Committed", "committedAt": now_time()}
    else:
        answer |= {"outcome": "Failed", "message": outcome}
    reporting.fields(state, {contract.LAST_SAVE_REQUEST: answer})
    _flush(state, deadline)
    raise PreemptedExit(
        f"stopped at step {step} on SIGTERM: "
        + ("checkpoint committed" if outcome is None else outcome)
    )


def _finalize_in_flight(state: Any) -> None:
    if getattr(state, "_async_calls_queue", None) is None:
        return
    try:
        saving.finalize(state, blocking=True, terminate=False)
    except AsyncSaveError as exc:
        # Tolerated: that save is gone (nothing visible); the final save below still runs.
        logger.error("rank %d: the save in flight failed at SIGTERM: %s", dist.get_rank(), exc)


def _already_committed(state: Any, step: int) -> bool:
    root = state.cfg.checkpoint.save
    tracker = read_tracker(Path(root)) if root and Path(root).is_dir() else None
    committed = tracker is not None and not tracker.release and tracker.iteration == step
    return bool(dist.broadcast_object(committed))


def _estimate_s(state: Any) -> float | None:
    """p95 of recent saves' start-to-commit time (rank 0's measurements, on every rank)."""
    samples = sorted(run_of(state).save_stalls.get("persistentDurable", []))
    estimate = samples[min(len(samples) - 1, int(0.95 * len(samples)))] if samples else None
    shared: float | None = dist.broadcast_object(estimate)
    return shared


def _final_save(state: Any, step: int, deadline: float) -> str | None:
    """Commit a persistent save of ``step``; None when committed (or already), else why not."""
    if state.cfg.checkpoint.save is None:
        return "no checkpoint.save directory: nothing saved"
    if _already_committed(state, step):
        logger.info("rank %d: step %d is already committed", dist.get_rank(), step)
        return None
    left, estimate = deadline - time.monotonic(), _estimate_s(state)
    if estimate is not None and estimate > left:
        reason = (
            f"not saved: a save takes ~{estimate:.1f} s and {max(left, 0):.1f} s of the grace "
            f"period are left; the previous checkpoint is intact (lengthen "
            f"terminationGracePeriodSeconds and {GRACE_ENV}, or save more often)"
        )
        logger.error("rank %d: %s", dist.get_rank(), reason)
        return reason
    return saving.save_committed(state, why="SIGTERM", terminate=True)


def _flush(state: Any, deadline: float) -> None:
    target = reporting.reporter(state)
    if target is not None:
        target.flush(timeout=max(0.5, deadline - time.monotonic()))
