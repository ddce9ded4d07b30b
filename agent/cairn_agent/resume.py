"""Step 3 of a load (apply what was read) and the whole load as one call.

Apply order: train state, model weights, optimizer and scheduler, rerun state, then RNG last,
so nothing between the restore and the next training step draws random numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cairn_agent import local_flow, optim_state, reporting
from cairn_agent.engine import dist
from cairn_agent.errors import CheckpointNotFoundError
from cairn_agent.load_flow import (
    Inspected,
    Loaded,
    first_loadable,
    is_peft_resume,
    nothing_to_load,
    resolve,
    skip,
)
from cairn_agent.model_state import load_model_sections
from cairn_agent.rng import restore_rng_state
from cairn_agent.state import GlobalState
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)


def _apply_train_state(state: GlobalState, inspected: Inspected) -> None:
    if not state.cfg.checkpoint.finetune and inspected.train_state is not None:
        state.train_state = inspected.train_state
    if state.cfg.checkpoint.finetune or inspected.candidate.release:
        state.train_state.step = 0


def _apply_optimizer(
    state: GlobalState, loaded: Loaded, model: list[Any], optimizer: Any, scheduler: Any
) -> None:
    sd = loaded.state_dict
    if loaded.plan.optim:
        with torch.no_grad():
            if optim_state.is_torch_optimizer(optimizer):
                optim_state.load_named_state_dict(model, optimizer, sd["optimizer"])
            else:
                optimizer.load_state_dict(sd["optimizer"])
        # Old Megatron-LM checkpoints name the scheduler section "lr_scheduler".
        saved_scheduler = sd.get("opt_param_scheduler", sd.get("lr_scheduler"))
        if scheduler is not None and saved_scheduler is not None:
            scheduler.load_state_dict(saved_scheduler)
    elif optimizer is not None and loaded.plan.model and hasattr(optimizer, "reload_model_params"):
        # Mixed-precision optimizers keep fp32 main copies; refresh them from the new weights.
        if state.cfg.checkpoint.load_main_params_from_ckpt:
            optimizer.reload_model_params(state_dict=sd)
        else:
            optimizer.reload_model_params()


def _apply_rerun(sd: dict[str, Any]) -> None:
    from megatron.core.rerun_state_machine import get_rerun_state_machine

    get_rerun_state_machine().load_state_dict(sd["rerun_state_machine"])


def apply(
    state: GlobalState,
    loaded: Loaded,
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    strict: bool,
) -> None:
    """Put what was read into the train state, model, optimizer, scheduler and RNGs."""
    _apply_train_state(state, loaded.inspected)
    if loaded.plan.model:
        load_model_sections(model, loaded.state_dict, strict=strict and not is_peft_resume(state))
    _apply_optimizer(state, loaded, model, optimizer, scheduler)
    if loaded.plan.rerun:
        _apply_rerun(loaded.state_dict)
    if loaded.plan.rng:
        restore_rng_state(loaded.state_dict["rng_state"], state.cfg.rng.data_parallel_random_init)


def _local_first(
    state: GlobalState,
    context: dict[str, Any] | None,
    candidates: list[LoadCandidate],
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    skip_model_and_opt: bool,
) -> Loaded | None:
    """The node-local checkpoint when it is at least as new as the global target and readable."""
    newest_global = candidates[0].iteration if candidates else -1
    local = local_flow.local_candidate(state, context, newest_global)
    if local is None or context is None:
        return None
    outcome = local_flow.try_local(
        state, local, context, model, optimizer, scheduler, skip_model_and_opt
    )
    if isinstance(outcome, Loaded):
        return outcome
    skip(state, local, outcome, candidates)
    return None


def _resolve_with_cluster_pin(
    state: GlobalState, load_dir: Path
) -> tuple[list[LoadCandidate], int | None]:
    """Resolution order of DESIGN.md §3: the cluster's pinned step first, else the tracker."""
    pin = reporting.cluster_pin(state)
    if pin is not None:
        try:
            return resolve(load_dir, state.cfg.checkpoint, pin), pin
        except CheckpointNotFoundError as exc:
            # The published point may be stale (e.g. deleted by hand); the tracker still holds.
            logger.warning("ignoring the cluster's resume point: %s", exc)
    return resolve(load_dir, state.cfg.checkpoint, None), None


def _log_resumed(state: GlobalState, candidate: LoadCandidate) -> None:
    logger.info(
        "rank %d: resumed from %s (iteration %d, %s); training continues at step %d",
        dist.get_rank(),
        candidate.path,
        candidate.iteration,
        candidate.source,
        state.train_state.step,
    )


def load(
    state: GlobalState,
    load_dir: str | Path,
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    *,
    strict: bool,
    skip_model_and_opt: bool,
    pinned: int | None,
    checkpointing_context: dict[str, Any] | None = None,
) -> tuple[int, float, float]:
    """Resolve, read with fallback, apply; returns (iteration, flops, checkpoint_version)."""
    if pinned is None:
        candidates, pinned = _resolve_with_cluster_pin(state, Path(load_dir))
    else:
        candidates = resolve(Path(load_dir), state.cfg.checkpoint, pinned)
    loaded: Loaded | None = None
    if pinned is None:
        loaded = _local_first(
            state,
            checkpointing_context,
            candidates,
            model,
            optimizer,
            scheduler,
            skip_model_and_opt,
        )
    if loaded is None and not candidates:
        iteration, flops = nothing_to_load(state.cfg.checkpoint, load_dir)
        return iteration, flops, 0.0
    if loaded is None:
        loaded = first_loadable(state, candidates, model, optimizer, scheduler, skip_model_and_opt)
    apply(state, loaded, model, optimizer if not skip_model_and_opt else None, scheduler, strict)
    candidate = loaded.inspected.candidate
    state.resumed_iteration = None if state.cfg.checkpoint.finetune else candidate.iteration
    reporting.resumed(state, candidate)
    dist.barrier()
    _log_resumed(state, candidate)
    version = float(loaded.state_dict.get("checkpoint_version", 0))
    return (
        state.train_state.step,
        float(state.train_state.floating_point_operations_so_far),
        version,
    )
