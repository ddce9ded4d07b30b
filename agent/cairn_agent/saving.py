"""One ``save_checkpoint`` and one finalize, as the facade and the step boundary run them.

Picks the tier (node-local through nvidia-resiliency-ext, or a global root), hands an async
save to the run's queue, remembers the objects it saved (so a save the cluster asks for at a
step boundary can be made without the script's help) and measures how long training was
blocked, which the operator's adaptive interval reads from ``status.saveStats``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.errors import CairnError
from cairn_agent.flows import local as local_flow
from cairn_agent.flows import save as save_flow
from cairn_agent.resource.status import WorkerState
from cairn_agent.state.compose import save_state_dict
from cairn_agent.state.model import as_model_list
from cairn_agent.state.run import SavedObjects, run_of

logger = logging.getLogger(__name__)


def async_queue(state: Any) -> Any:
    """The run's async save queue (Cairn's persistent worker), or a clear error."""
    from cairn_agent.async_save import AsyncSaveQueue  # only async runs need the worker code

    queue = getattr(state, "async_calls_queue", None)
    if not isinstance(queue, AsyncSaveQueue):
        raise TypeError(
            "async saves need checkpoint.async_save=True and a cairn_agent.state.train."
            "GlobalState (its async queue is Cairn's persistent worker)"
        )
    return queue


def save(
    state: Any,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    flops: float,
    *,
    checkpointing_context: dict[str, Any] | None,
    non_persistent: bool,
    train_data_iterator: Any,
) -> None:
    """COLLECTIVE: save the current step (sync: committed on return; async: scheduled)."""
    models = as_model_list(model)
    run = run_of(state)
    run.objects = SavedObjects(
        models, optimizer, scheduler, train_data_iterator, checkpointing_context
    )
    started = time.monotonic()
    if not non_persistent:
        run.save_started[int(state.train_state.step)] = started
    if non_persistent and state.cfg.checkpoint.non_persistent_ckpt_type == "local":
        local_flow.save_local(
            state, models, optimizer, scheduler, flops, checkpointing_context, train_data_iterator
        )
    else:
        _save_global(
            state, models, optimizer, scheduler, flops, non_persistent, train_data_iterator
        )
    if run.control is not None:
        run.control.saved_during_step = True
    reporting.save_stall(state, time.monotonic() - started, non_persistent=non_persistent)


def _save_global(
    state: Any,
    models: list[Any],
    optimizer: Any,
    scheduler: Any,
    flops: float,
    non_persistent: bool,
    train_data_iterator: Any,
) -> None:
    request = save_flow.save(
        state,
        models,
        optimizer,
        scheduler,
        flops,
        non_persistent_ckpt=non_persistent,
        train_data_iterator=train_data_iterator,
    )
    if request is None:
        return
    queue = async_queue(state)
    control = run_of(state).control
    # The save before this one may still be in flight: wait for it only as long as the
    # Checkpoint allows a save to take (spec.asyncWorker.saveStallSeconds), then abort it.
    queue.stall_limit_s = control.resolution.policy.save_stall_seconds if control else None
    queue.schedule(request)
    if not non_persistent:
        reporting.save_phase(state, request.target.iteration, "Writing", is_async=True)
    logger.info(
        "rank %d: scheduled async save of iteration %d to %s",
        dist.get_rank(),
        request.target.iteration,
        request.target.root,
    )


def finalize(state: Any, *, blocking: bool, terminate: bool) -> None:
    """COLLECTIVE: commit finished async saves; report the worker's heartbeat."""
    local_flow.finalize_local(state, blocking=blocking or terminate)  # issue 10: local tier
    queue = state.async_calls_queue
    if queue is None:
        return
    if blocking and not queue.is_empty():
        logger.info(
            "rank %d: waiting for %d unfinished async saves",
            dist.get_rank(),
            queue.num_unfinalized(),
        )
    queue.maybe_finalize(blocking=blocking)
    if not (blocking or terminate):
        _prewarm(state, queue)
    if terminate:
        state.close_async_queue()
        reporting.worker_heartbeat(state, "Stopped", None)
        return
    # Called every training step, so it doubles as the async worker's heartbeat to the
    # cluster (the reporter throttles it): a stalled or dead worker shows as Degraded.
    worker_state: WorkerState = "Writing" if queue.writes_in_progress() else "Idle"
    reporting.worker_heartbeat(state, worker_state, queue.stats().worker_pid)


def _prewarm(state: Any, queue: Any) -> None:
    """COLLECTIVE, once per run: plan the first save and map its staging buffer ahead of it.

    At the first step boundary after a training step (the optimizer state exists by then, so the
    structure is the one every save has), with nothing in flight (the same on every rank, as
    saves are scheduled and finalized collectively). The first save then blocks for its copy
    only, like every later one; the one-time planning and buffer mapping move to this step.
    """
    run = run_of(state)
    if run.prewarmed or run.objects is None or int(state.train_state.step) <= 0:
        return
    if queue.num_unfinalized():
        return
    run.prewarmed = True
    objects = run.objects
    state_dict = save_state_dict(
        state, objects.model, objects.optimizer, objects.scheduler, objects.train_data_iterator
    )
    queue.prepare(state_dict)
    logger.info("rank %d: async save planned and its staging buffer mapped", dist.get_rank())


def save_committed(state: Any, *, why: str, terminate: bool = False) -> str | None:
    """COLLECTIVE: a persistent save of the current step from the remembered objects, committed
    before returning (an async one is finalized); None when committed, else why not.

    For the saves the cluster asks for between the script's own (``spec.saveNow``, SIGTERM).
    A failure is returned, not raised: like any failed save, nothing of it is visible and the
    previous checkpoint is intact; the caller reports it. ``terminate`` stops the async worker.
    """
    step = int(state.train_state.step)
    objects = run_of(state).objects
    if objects is None:
        return "no model known to Cairn yet (call load_checkpoint first): nothing saved"
    flops = float(getattr(state.train_state, "floating_point_operations_so_far", 0.0))
    logger.info("rank %d: saving iteration %d (%s)", dist.get_rank(), step, why)
    try:
        save(
            state,
            objects.model,
            objects.optimizer,
            objects.scheduler,
            flops,
            checkpointing_context=objects.checkpointing_context,
            non_persistent=False,
            train_data_iterator=objects.train_data_iterator,
        )
        if getattr(state, "_async_calls_queue", None) is not None:
            finalize(state, blocking=True, terminate=terminate)
    except (CairnError, OSError) as exc:
        logger.error(
            "rank %d: the save of iteration %d (%s) failed: %s", dist.get_rank(), step, why, exc
        )
        return f"the save failed: {exc}"
    return None
