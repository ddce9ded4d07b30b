"""Node-local non-persistent checkpoints in ``save_checkpoint`` and ``load_checkpoint``.

Save: the same state dict as a global save plus ``train_state_metadata`` (Bridge's key), handed
to nvidia-resiliency-ext's ``LocalCheckpointManager`` (nvrx owns the layout, the dirty-then-
rename write and keeping one generation). There is no tracker and no run config.

Load: when the newest iteration every rank holds locally is at least as new as the global
target, the local checkpoint is tried first; if it cannot be read on every rank, the load
falls back to the global candidates, loudly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cairn_agent import local_ckpt
from cairn_agent.engine import dist
from cairn_agent.load_flow import Inspected, Loaded, LoadPlan, agreed
from cairn_agent.model_state import SAVED_OPTIMIZER_KWARG, generate_state_dict
from cairn_agent.non_persistent import _data_parallel_group
from cairn_agent.rng import get_rng_state
from cairn_agent.save_flow import build_state_dict, metadata_for
from cairn_agent.state import GlobalState, TrainState
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)

TRAIN_STATE_KEY = "train_state_metadata"


def save_local(
    state: GlobalState,
    model: list[Any],
    optimizer: Any,
    opt_param_scheduler: Any,
    num_flops: float,
    checkpointing_context: dict[str, Any] | None,
    train_data_iterator: Any,
) -> None:
    """Save this rank's node-local checkpoint of the current step (synchronously). Collective."""
    ckpt = state.cfg.checkpoint
    context = checkpointing_context if checkpointing_context is not None else {}
    local_ckpt.local_manager(context)  # fail early, with a hint, when the context lacks it
    state_dict = build_state_dict(state, model, optimizer, opt_param_scheduler, train_data_iterator)
    train_state = state.train_state.state_dict()
    train_state["floating_point_operations_so_far"] = train_state[
        "floating_point_operations_so_far"
    ].new_tensor(num_flops)
    state_dict[TRAIN_STATE_KEY] = train_state
    if ckpt.async_save:
        logger.info("rank %d: local checkpoints are written synchronously", dist.get_rank())
    local_ckpt.save_local_checkpoint(
        context,
        state_dict,
        state.train_state.step,
        algo=ckpt.non_persistent_local_ckpt_algo,
        parallelization_group=_data_parallel_group(),
        assume_constant_structure=ckpt.ckpt_assume_constant_structure,
    )
    logger.info(
        "rank %d: saved local checkpoint of iteration %d", dist.get_rank(), state.train_state.step
    )


def local_candidate(
    state: GlobalState, checkpointing_context: dict[str, Any] | None, newest_global: int
) -> LoadCandidate | None:
    """The local checkpoint to try first, if any is at least as new as ``newest_global``."""
    ckpt = state.cfg.checkpoint
    if ckpt.non_persistent_ckpt_type != "local" or not checkpointing_context:
        return None
    if local_ckpt.MANAGER_KEY not in checkpointing_context:
        return None
    iteration = local_ckpt.find_latest_local_iteration(checkpointing_context)
    if iteration < 0 or iteration < newest_global:
        return None
    local_dir = Path(ckpt.non_persistent_local_ckpt_dir or ".")
    return LoadCandidate(iteration, local_dir, False, "non-persistent")


def _plan(state: GlobalState, optimizer: Any, skip_model_and_opt: bool) -> LoadPlan:
    # The local checkpoint was written by this job with this config: its contents follow it.
    ckpt = state.cfg.checkpoint
    fresh = ckpt.finetune
    optim = not fresh and ckpt.load_optim and ckpt.save_optim and optimizer is not None
    return LoadPlan(
        model=not skip_model_and_opt,
        optim=optim and not skip_model_and_opt,
        rng=not fresh and ckpt.load_rng and ckpt.save_rng,
        rerun=False,
    )


def _read_local(
    state: GlobalState,
    context: dict[str, Any],
    plan: LoadPlan,
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
) -> dict[str, Any]:
    ckpt = state.cfg.checkpoint
    local_ckpt._check_cpu_algo(ckpt.non_persistent_local_ckpt_algo)
    intermediate, _ = local_ckpt.local_manager(context).load()
    # The template of a plain torch optimizer comes from the saved common part (its layout).
    saved_optimizer = intermediate.common_state_dict.get("optimizer")
    metadata = metadata_for(state)
    rng = get_rng_state(state.cfg.rng.data_parallel_random_init) if plan.rng else None
    template = generate_state_dict(
        ckpt,
        model if plan.model else [],
        optimizer if plan.optim else None,
        scheduler if plan.optim else None,
        rng,
        optim_sd_kwargs={
            "is_loading": True,
            "metadata": metadata,
            SAVED_OPTIMIZER_KWARG: saved_optimizer,
        },
        model_sd_kwargs={"metadata": metadata},
    )
    loaded: dict[str, Any] = intermediate.to_state_dict(
        template,
        algo=ckpt.non_persistent_local_ckpt_algo,
        parallelization_group=_data_parallel_group(),
    )
    return loaded


def try_local(
    state: GlobalState,
    candidate: LoadCandidate,
    context: dict[str, Any],
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    skip_model_and_opt: bool,
) -> Loaded | BaseException:
    """Read the local checkpoint on every rank; the agreed error if any rank failed."""
    plan = _plan(state, optimizer, skip_model_and_opt)
    state_dict, error = agreed(
        f"read local checkpoint {candidate.iteration}",
        lambda: _read_local(state, context, plan, model, optimizer, scheduler),
    )
    if state_dict is None:
        return error or RuntimeError("reading the local checkpoint failed")
    train_state = TrainState()
    if TRAIN_STATE_KEY in state_dict:
        train_state.load_state_dict(state_dict[TRAIN_STATE_KEY])
    else:
        logger.warning("local checkpoint has no %s; counters restart", TRAIN_STATE_KEY)
        train_state.step = candidate.iteration
    inspected = Inspected(candidate, {}, train_state, None, frozenset())
    return Loaded(inspected, plan, state_dict)
