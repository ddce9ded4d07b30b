"""Step 3 of a load (apply what was read) and the whole load as one call.

Apply order: train state, model weights, optimizer and scheduler, rerun state, then RNG last,
so nothing between the restore and the next training step draws random numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.errors import CheckpointNotFoundError
from cairn_agent.flows import local as local_flow
from cairn_agent.flows.candidates import first_loadable, nothing_to_load, resolve
from cairn_agent.flows.common import Inspected, Loaded
from cairn_agent.resource.status import ResumeTier
from cairn_agent.state import optimizer as optim_state
from cairn_agent.state.compose import is_peft_resume
from cairn_agent.state.model import load_model_sections
from cairn_agent.state.rng import restore_rng_state
from cairn_agent.state.run import run_of
from cairn_agent.state.train import GlobalState
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


# --- issue 10 (node-local tier): begin ---------------------------------------------------------
def _local_first(
    state: GlobalState,
    context: dict[str, Any] | None,
    candidates: list[LoadCandidate],
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    skip_model_and_opt: bool,
) -> tuple[Loaded | None, str | None]:
    """The node-local checkpoint when it is the newest durable state and readable; and why a
    newer local iteration was passed over, if one was (reported with the resume)."""
    newest_global = candidates[0].iteration if candidates else -1
    choice = local_flow.choose(state, context, newest_global)
    if choice.candidate is None or context is None:
        return None, choice.reason
    outcome = local_flow.try_local(
        state, choice.candidate, context, model, optimizer, scheduler, skip_model_and_opt
    )
    if isinstance(outcome, Loaded):
        return outcome, None
    return None, f"local iteration {choice.candidate.iteration} is not loadable: {outcome}"


def _tier(loaded: Loaded, from_local: bool) -> ResumeTier:
    if from_local:
        return "local"
    return "global" if loaded.inspected.candidate.source == "non-persistent" else "persistent"


# --- issue 10 (node-local tier): end -----------------------------------------------------------


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


def _log_resumed(state: GlobalState, candidate: LoadCandidate, tier: ResumeTier) -> None:
    logger.info(
        "rank %d: resumed from %s (iteration %d, %s, %s tier); training continues at step %d",
        dist.get_rank(),
        candidate.path,
        candidate.iteration,
        candidate.source,
        tier,
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
    passed_over: str | None = None
    if pinned is None:
        loaded, passed_over = _local_first(
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
    from_local = loaded is not None
    if loaded is None:
        loaded = first_loadable(state, candidates, model, optimizer, scheduler, skip_model_and_opt)
    apply(state, loaded, model, optimizer if not skip_model_and_opt else None, scheduler, strict)
    candidate = loaded.inspected.candidate
    run_of(state).resumed_iteration = None if state.cfg.checkpoint.finetune else candidate.iteration
    tier = _tier(loaded, from_local)
    reporting.resumed(state, candidate, tier, passed_over)
    dist.barrier()
    _log_resumed(state, candidate, tier)
    version = float(loaded.state_dict.get("checkpoint_version", 0))
    return (
        state.train_state.step,
        float(state.train_state.floating_point_operations_so_far),
        version,
    )
