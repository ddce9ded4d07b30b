"""Node-local non-persistent checkpoints in ``save_checkpoint`` and ``load_checkpoint``.

Save: the same state dict as a global save plus ``train_state_metadata`` (Bridge's key), handed
to the node-local tier (``cairn_agent.local``): parts exchanged with the replication clique,
written to each node's own directory, committed once complete on every rank, synchronously or
finalized later when ``async_save`` is on. The dataloader position goes where a global save
puts it. There is no tracker and no run config.

Load: the survey says the newest local iteration every rank can restore (its own part or a
replica). When it is at least as new as the newest global checkpoint, it is read first; when a
newer local iteration exists that cannot be restored (every copy of some part lost or
corrupt), or the read fails, the load goes on to the global tiers loudly: an error in the log
and the reason in the Checkpoint's status.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.engine.topology import topology
from cairn_agent.flows.common import Inspected, Loaded, LoadPlan, agree_readable
from cairn_agent.local import nvrx as local_ckpt
from cairn_agent.local.exchange import to_state_dict
from cairn_agent.local.survey import Survey
from cairn_agent.local.tier import LocalTier
from cairn_agent.resource.status import LocalTier as LocalTierStatus
from cairn_agent.state.compose import load_template, save_state_dict
from cairn_agent.state.dataloader import dataloader_save_dir, maybe_save_dataloader_state
from cairn_agent.state.run import run_of
from cairn_agent.state.train import GlobalState, TrainState
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)

TRAIN_STATE_KEY = "train_state_metadata"


# --- save -------------------------------------------------------------------------------------


def save_local(
    state: GlobalState,
    model: list[Any],
    optimizer: Any,
    opt_param_scheduler: Any,
    num_flops: float,
    checkpointing_context: dict[str, Any] | None,
    train_data_iterator: Any,
) -> None:
    """Save this rank's node-local checkpoint of the current step. Collective.

    Sync: committed on every rank on return. Async (``async_save``): the parts are exchanged
    and being written; :func:`finalize_local` commits them.
    """
    ckpt = state.cfg.checkpoint
    context = checkpointing_context if checkpointing_context is not None else {}
    tier = local_ckpt.local_tier(context)  # fails early, with a hint, when the context lacks it
    step = state.train_state.step
    maybe_save_dataloader_state(train_data_iterator, step, dataloader_save_dir(state.cfg))
    state_dict = save_state_dict(state, model, optimizer, opt_param_scheduler, train_data_iterator)
    train_state = state.train_state.state_dict()
    train_state["floating_point_operations_so_far"] = train_state[
        "floating_point_operations_so_far"
    ].new_tensor(num_flops)
    state_dict[TRAIN_STATE_KEY] = train_state
    local_ckpt.save_local_checkpoint(
        context,
        state_dict,
        step,
        algo=ckpt.non_persistent_local_ckpt_algo,
        parallelization_group=topology().dp_cp_group,
        assume_constant_structure=ckpt.ckpt_assume_constant_structure,
        is_async=ckpt.async_save,
    )
    if ckpt.async_save:
        run_of(state).local_tier = tier
        logger.info("rank %d: local checkpoint of iteration %d is being written", _rank(), step)
        return
    _report_commit(state, tier)


def finalize_local(state: Any, *, blocking: bool) -> int | None:
    """Commit the async local save in flight once written everywhere (collective).

    Returns the committed iteration, or None (nothing in flight, or not written everywhere yet
    and not ``blocking``). Raises ``CommitError`` on every rank when a write failed anywhere.
    """
    tier = run_of(state).local_tier
    if not isinstance(tier, LocalTier):
        return None
    committed = tier.finalize(blocking)
    if committed is not None or tier.in_flight is None:
        run_of(state).local_tier = None
    if committed is not None:
        _report_commit(state, tier)
    return committed


def _report_commit(state: Any, tier: LocalTier) -> None:
    commit = tier.last_commit
    if commit is None:
        return
    reporting.local_tier(
        state,
        _status(
            tier,
            iteration=commit.iteration,
            copies=commit.copies,
            nodes=tier.node_names(),
            bytes_per_rank=commit.part_bytes,
        ),
    )


def _status(
    tier: LocalTier,
    *,
    iteration: int,
    copies: int,
    nodes: list[str],
    bytes_per_rank: int,
    problem: str | None = None,
) -> LocalTierStatus:
    return LocalTierStatus(
        iteration=iteration,
        replicas=copies,
        replication_factor=tier.replication_factor,
        nodes=nodes,
        node_count=len(nodes),
        bytes_per_rank=bytes_per_rank,
        updated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        problem=problem,
    )


# --- choosing the local tier at load -------------------------------------------------------------


@dataclass(frozen=True)
class LocalChoice:
    """What the local tier offers a load."""

    candidate: LoadCandidate | None
    """The local iteration to read first, if any is restorable and new enough."""
    reason: str | None = None
    """Why a newer local iteration is not used (loud: logged and reported)."""


def choose(
    state: GlobalState, checkpointing_context: dict[str, Any] | None, newest_global: int
) -> LocalChoice:
    """The local iteration to read first, when it is the newest durable state. Collective."""
    ckpt = state.cfg.checkpoint
    context = checkpointing_context or {}
    if ckpt.non_persistent_ckpt_type != "local" or local_ckpt.TIER_KEY not in context:
        return LocalChoice(None)
    tier = local_ckpt.local_tier(context)
    found = tier.survey()
    reason = _unrestorable_reason(found, newest_global)
    _report_survey(state, tier, found, reason)
    iteration = found.restorable
    if iteration < 0 or iteration < newest_global:
        return LocalChoice(None, reason)
    path = Path(tier.manager.local_ckpt_dir)
    return LocalChoice(LoadCandidate(iteration, path, False, "non-persistent"), reason)


def _unrestorable_reason(found: Survey, newest_global: int) -> str | None:
    newest = found.newest
    if newest <= max(found.restorable, newest_global):
        return None
    reason = found.why_not(newest)
    logger.error(
        "rank %d: LOCAL CHECKPOINT OF ITERATION %d CANNOT BE RESTORED: %s; resuming from an "
        "older iteration instead",
        _rank(),
        newest,
        reason,
    )
    return reason


def _report_survey(state: Any, tier: LocalTier, found: Survey, problem: str | None) -> None:
    iteration = found.restorable
    holders = found.holding_ranks(iteration) if iteration >= 0 else []
    _, size = tier.store.usage()
    status = _status(
        tier,
        iteration=iteration,
        copies=found.copies(iteration) if iteration >= 0 else 0,
        nodes=tier.node_names(holders),
        bytes_per_rank=size,
        problem=problem,
    )
    reporting.local_tier(state, status)


# --- reading ----------------------------------------------------------------------------------


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
    part, _ = local_ckpt.local_tier(context).load()
    # The template of a plain torch optimizer comes from the saved common part (its layout).
    template = load_template(
        state,
        (plan.model, plan.optim, plan.rng),
        model,
        optimizer,
        scheduler,
        metadata=None,
        saved_optimizer=part.common_state_dict.get("optimizer"),
    )
    return to_state_dict(
        part, template, ckpt.non_persistent_local_ckpt_algo, topology().dp_cp_group
    )


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
    state_dict, error = agree_readable(
        f"read local checkpoint {candidate.iteration}",
        lambda: _read_local(state, context, plan, model, optimizer, scheduler),
    )
    if state_dict is None:
        failure = error or RuntimeError("reading the local checkpoint failed")
        logger.error(
            "rank %d: LOCAL CHECKPOINT OF ITERATION %d IS NOT LOADABLE: %s; falling back to the "
            "global tiers",
            _rank(),
            candidate.iteration,
            failure,
        )
        run_of(state).skipped_checkpoints.append((str(candidate.path), str(failure)))
        return failure
    train_state = TrainState()
    if TRAIN_STATE_KEY in state_dict:
        train_state.load_state_dict(state_dict[TRAIN_STATE_KEY])
    else:
        logger.warning("local checkpoint has no %s; counters restart", TRAIN_STATE_KEY)
        train_state.step = candidate.iteration
    inspected = Inspected(candidate, {}, train_state, None, frozenset())
    return Loaded(inspected, plan, state_dict)


def _rank() -> int:
    return dist.get_rank()
