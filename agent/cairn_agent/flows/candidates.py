"""``load_checkpoint`` as a short list of steps, with fallback to older checkpoints.

1. Resolve candidates on rank 0 (``storage.resolve``: pinned ``ckpt_step``, else tracker, else
   newest committed; a newer global non-persistent checkpoint wins) and broadcast them, so
   every rank tries the same directories in the same order.
2. For each candidate: *inspect* (rank-local reads: verify, ``common.pt``, ``train_state.pt``,
   ``run_config.yaml``, DCP metadata), agree; then *read* (collective: build the template, DCP
   load), agree. A candidate that fails on any rank is skipped on every rank, loudly, and the
   next one is tried. Agreeing after each phase keeps every rank in the same collective.
3. Apply what was read: train state, model weights, optimizer and scheduler, rerun state, RNG
   (last, so nothing after it draws random numbers before training resumes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch.distributed.checkpoint.filesystem import FileSystemReader

from cairn_agent.cluster import reporting
from cairn_agent.config import CheckpointConfig
from cairn_agent.engine import dist
from cairn_agent.engine.collectives import on_coordinator
from cairn_agent.engine.load import load_checkpoint_dir
from cairn_agent.engine.sharded import load_common
from cairn_agent.errors import CheckpointCorruptError, CheckpointNotFoundError
from cairn_agent.flows.common import Inspected, Loaded, LoadPlan, agree_readable
from cairn_agent.state.compose import load_template
from cairn_agent.state.legacy import (
    _extract_megatron_lm_args_from_state_dict,
    _get_train_state_from_state_dict,
)
from cairn_agent.state.run import run_of
from cairn_agent.state.run_config import view
from cairn_agent.state.train import GlobalState, TrainState
from cairn_agent.storage import layout
from cairn_agent.storage.manifest import verify_checkpoint_dir
from cairn_agent.storage.resolve import LoadCandidate, load_candidates

logger = logging.getLogger(__name__)
T = TypeVar("T")

_ITERATION_MARKERS = (layout.METADATA_JSON, layout.TRAIN_STATE_FILENAME, layout.RUN_CONFIG_FILENAME)


# --- 1. candidates ------------------------------------------------------------------------------
def is_iteration_dir(path: Path) -> bool:
    """True when ``path`` is one checkpoint iteration rather than a root of many."""
    return any((path / marker).exists() for marker in _ITERATION_MARKERS)


def non_persistent_roots(ckpt: CheckpointConfig, load_dir: Path) -> list[Path]:
    """Global non-persistent roots to compare against (only without a pinned ckpt_step)."""
    if ckpt.non_persistent_ckpt_type != "global":
        return []
    if ckpt.non_persistent_global_ckpt_dir:
        roots = [Path(ckpt.non_persistent_global_ckpt_dir)]
    else:
        bases = [b for b in (ckpt.save, str(load_dir)) if b]
        roots = [Path(b) / layout.NON_PERSISTENT_SUBDIR for b in bases]
    unique = list(dict.fromkeys(roots))
    return [r for r in unique if r.is_dir()]


def _resolve_local(
    load_dir: Path, ckpt: CheckpointConfig, pinned: int | None
) -> list[LoadCandidate]:
    if is_iteration_dir(load_dir):
        iteration = layout.parse_iteration_dir_name(load_dir.name)
        release = load_dir.name == layout.RELEASE_NAME
        return [LoadCandidate(iteration or 0, load_dir, release, "pinned")]
    roots = non_persistent_roots(ckpt, load_dir) if pinned is None else []
    return load_candidates(load_dir, pinned=pinned, non_persistent_roots=roots)


def resolve(load_dir: Path, ckpt: CheckpointConfig, pinned: int | None) -> list[LoadCandidate]:
    """Rank 0 resolves the candidates; every rank gets the same list, or the same error."""
    return list(on_coordinator(lambda: _resolve_local(load_dir, ckpt, pinned)))


# --- 2. inspect and read ------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # Tolerated: run_config.yaml only refines the load plan; the tensors are unaffected.
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return loaded if isinstance(loaded, dict) else None


def _read_train_state(directory: Path, common: dict[str, Any]) -> TrainState:
    path = directory / layout.TRAIN_STATE_FILENAME
    if not path.is_file():
        logger.info("%s not found; train state taken from common.pt (Megatron-LM checkpoint)", path)
        return _get_train_state_from_state_dict(common)
    train_state = TrainState()
    try:
        train_state.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except KeyError as exc:
        raise CheckpointCorruptError(path, f"train state is incomplete ({exc})") from exc
    return train_state


def inspect(candidate: LoadCandidate, *, deep: bool) -> Inspected:
    """Rank-local reads of one candidate; raises if it is not a readable checkpoint.

    ``deep`` checks every file's checksum too (on the coordinator only: it reads every byte).
    """
    path = candidate.path
    verify_checkpoint_dir(path, deep=deep and dist.get_rank() == 0)
    common = load_common(path)
    keys = frozenset(FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    return Inspected(
        candidate=candidate,
        common=common,
        train_state=_read_train_state(path, common),
        run_config=_read_yaml(path / layout.RUN_CONFIG_FILENAME),
        dcp_keys=keys,
    )


def _saved_layout(inspected: Inspected) -> tuple[int, int] | None:
    model = (inspected.run_config or {}).get("model")
    if isinstance(model, dict) and "tensor_model_parallel_size" in model:
        return (
            int(model["tensor_model_parallel_size"]),
            int(model.get("pipeline_model_parallel_size", 1)),
        )
    if "args" in inspected.common:
        legacy = _extract_megatron_lm_args_from_state_dict(inspected.common)["model"]
        return (
            int(legacy["tensor_model_parallel_size"]),
            int(legacy["pipeline_model_parallel_size"]),
        )
    return None


def plan_load(
    state: GlobalState, inspected: Inspected, optimizer: Any, skip_model_and_opt: bool
) -> LoadPlan:
    """What to read, from the config and what the checkpoint holds (Bridge's rules)."""
    ckpt = state.cfg.checkpoint
    fresh_start = ckpt.finetune or inspected.candidate.release
    current = view(state.cfg).layout
    saved = _saved_layout(inspected)
    same_layout = saved is None or saved == current
    has_optim = "optimizer" in inspected.common or any(
        k.startswith("optimizer.") for k in inspected.dcp_keys
    )
    has_rng = any(k.startswith("rng_state") for k in inspected.dcp_keys)
    optim = not fresh_start and ckpt.load_optim and optimizer is not None and not skip_model_and_opt
    if optim and not has_optim:
        logger.warning(
            "%s has no optimizer state; the optimizer starts fresh", inspected.candidate.path
        )
    rng = not fresh_start and ckpt.load_rng and same_layout and has_rng
    if ckpt.load_rng and not fresh_start and not same_layout:
        logger.warning("parallel layout changed %s -> %s; RNG state not restored", saved, current)
    rerun = not fresh_start and same_layout and "rerun_state_machine" in inspected.common
    return LoadPlan(model=not skip_model_and_opt, optim=optim and has_optim, rng=rng, rerun=rerun)


def read(
    state: GlobalState,
    inspected: Inspected,
    plan: LoadPlan,
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
) -> dict[str, Any]:
    """Collective: build the load template for ``plan`` and read the candidate into it."""
    ckpt = state.cfg.checkpoint
    template = load_template(
        state,
        (plan.model, plan.optim, plan.rng),
        model,
        optimizer,
        scheduler,
        metadata=inspected.common.get("content_metadata"),
        saved_optimizer=inspected.common.get("optimizer"),
    )
    return load_checkpoint_dir(
        template, inspected.candidate.path, strict=ckpt.dist_ckpt_strictness, verify=False
    )


def skip(
    state: GlobalState,
    candidate: LoadCandidate,
    error: BaseException,
    rest: Sequence[LoadCandidate],
) -> None:
    nxt = f"falling back to {rest[0].path}" if rest else "no older checkpoint left"
    logger.error(
        "rank %d: CHECKPOINT %s (iteration %d, %s) IS NOT LOADABLE: %s; %s",
        dist.get_rank(),
        candidate.path,
        candidate.iteration,
        candidate.source,
        error,
        nxt,
    )
    run_of(state).skipped_checkpoints.append((str(candidate.path), str(error)))
    reporting.corrupt(state, candidate, error)


def _try_candidate(
    state: GlobalState,
    candidate: LoadCandidate,
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    skip_model_and_opt: bool,
) -> Loaded | BaseException:
    """Inspect then read one candidate, agreeing after each phase; the error if it failed."""
    inspected, error = agree_readable(
        f"inspect {candidate.path}",
        lambda: inspect(candidate, deep=view(state.cfg).verify_integrity),
    )
    if inspected is None:
        return error or RuntimeError(f"inspecting {candidate.path} failed")
    plan = plan_load(state, inspected, optimizer, skip_model_and_opt)
    state_dict, error = agree_readable(
        f"read {candidate.path}", lambda: read(state, inspected, plan, model, optimizer, scheduler)
    )
    if state_dict is None:
        return error or RuntimeError(f"reading {candidate.path} failed")
    return Loaded(inspected, plan, state_dict)


def first_loadable(
    state: GlobalState,
    candidates: Sequence[LoadCandidate],
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    skip_model_and_opt: bool,
) -> Loaded:
    """The first candidate every rank could inspect and read; raises if none could."""
    errors: list[BaseException] = []
    for index, candidate in enumerate(candidates):
        outcome = _try_candidate(state, candidate, model, optimizer, scheduler, skip_model_and_opt)
        if isinstance(outcome, Loaded):
            return outcome
        errors.append(outcome)
        skip(state, candidate, outcome, candidates[index + 1 :])
    raise CheckpointCorruptError(
        candidates[0].path,
        f"none of the {len(candidates)} candidate checkpoints is loadable; first error: {errors[0]}",
    ) from errors[0]


def nothing_to_load(ckpt: CheckpointConfig, load_dir: str | Path | None) -> tuple[int, float]:
    """Start fresh, or raise when the config demands a checkpoint."""
    if ckpt.exit_on_missing_checkpoint:
        raise CheckpointNotFoundError(
            f"no checkpoint to load in {load_dir!s} and exit_on_missing_checkpoint=True; check "
            "checkpoint.load (and ckpt_step), or unset exit_on_missing_checkpoint to start fresh"
        )
    logger.info(
        "rank %d: no checkpoint in %s; training starts from scratch", dist.get_rank(), load_dir
    )
    return 0, 0.0
