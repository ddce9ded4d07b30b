"""The seed's lower-level load helpers: weights-only load and the "base" state-dict loaders.

``load_checkpoint`` does not go through these (it uses :mod:`cairn_agent.flows.candidates`); they
exist for code that calls them directly, e.g. inference and conversion scripts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn_agent.config import CheckpointConfig, StrictHandling
from cairn_agent.engine import dist
from cairn_agent.engine.load import load_checkpoint_dir
from cairn_agent.engine.sharded import load_common
from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.flows import candidates as load_flow
from cairn_agent.flows.common import CheckpointType, agree_readable
from cairn_agent.flows.non_persistent import load_local_base
from cairn_agent.state.model import (
    _generate_model_state_dict,
    as_model_list,
    drop_extra_state,
    load_model_sections,
)
from cairn_agent.state.peft import _is_model_section
from cairn_agent.storage import layout
from cairn_agent.storage.manifest import verify_checkpoint_dir
from cairn_agent.storage.resolve import LoadCandidate

logger = logging.getLogger(__name__)

BaseLoadResult = tuple[dict[str, Any] | None, str, bool, CheckpointType | None]


def _read_dir(
    directory: Path,
    ckpt_cfg: CheckpointConfig,
    rank0: bool,
    sharded_state_dict: dict[str, Any] | None,
) -> dict[str, Any]:
    """``common.pt`` only (``rank0`` pass) or the full load into ``sharded_state_dict``."""
    if rank0:
        verify_checkpoint_dir(directory, deep=False)
        return load_common(directory)
    if sharded_state_dict is None:
        raise ValueError("loading tensors needs sharded_state_dict (the load template)")
    return load_checkpoint_dir(sharded_state_dict, directory, strict=ckpt_cfg.dist_ckpt_strictness)


def _first_readable(
    candidates: list[LoadCandidate], read: Callable[[Path], dict[str, Any]]
) -> tuple[LoadCandidate, dict[str, Any]]:
    """The first candidate ``read(path)`` succeeds on, on every rank; loud about the others."""
    first_error: BaseException | None = None
    for candidate in candidates:
        path = candidate.path
        result, error = agree_readable(f"load {path}", functools.partial(read, path))
        if result is not None:
            return candidate, result
        first_error = first_error or error
        logger.error(
            "rank %d: CHECKPOINT %s IS NOT LOADABLE: %s", dist.get_rank(), candidate.path, error
        )
    raise CheckpointCorruptError(
        candidates[0].path, f"no loadable checkpoint; first error: {first_error}"
    ) from first_error


def _load_global_dist_base_checkpoint(
    load_dir: str,
    ckpt_cfg: CheckpointConfig,
    rank0: bool,
    sharded_state_dict: dict[str, Any] | None,
    iteration: int,
    release: bool,
    checkpointing_context: dict[str, Any] | None = None,
) -> BaseLoadResult:
    """Load ``iter_<iteration>`` (or ``release``) of ``load_dir``: common part or full state."""
    directory = layout.iteration_dir(load_dir, iteration, release)
    state_dict = _read_dir(directory, ckpt_cfg, rank0, sharded_state_dict)
    return state_dict, str(directory), release, CheckpointType.GLOBAL


def _load_base_checkpoint(
    load_dir: str | None,
    ckpt_cfg: CheckpointConfig,
    rank0: bool = False,
    sharded_state_dict: dict[str, Any] | None = None,
    checkpointing_context: dict[str, Any] | None = None,
) -> BaseLoadResult:
    """Resolve ``load_dir`` and load its target, falling back past unreadable checkpoints.

    Returns ``(state_dict, checkpoint_dir, release, CheckpointType.GLOBAL)``, or
    ``(None, "", False, None)`` when there is nothing to load (``CheckpointNotFoundError``
    with ``exit_on_missing_checkpoint``). Collective.
    """
    if load_dir is None:
        return None, "", False, None
    candidates = load_flow.resolve(Path(load_dir), ckpt_cfg, ckpt_cfg.ckpt_step)
    if not candidates:
        load_flow.nothing_to_load(ckpt_cfg, load_dir)
        return None, "", False, None
    candidate, state_dict = _first_readable(
        candidates, lambda path: _read_dir(path, ckpt_cfg, rank0, sharded_state_dict)
    )
    return state_dict, str(candidate.path), candidate.release, CheckpointType.GLOBAL


def _load_non_persistent_base_checkpoint(
    non_persistent_global_dir: str,
    ckpt_cfg: CheckpointConfig,
    rank0: bool,
    sharded_state_dict: dict[str, Any] | None,
    non_persistent_iteration: int,
    checkpointing_context: dict[str, Any] | None = None,
) -> tuple[Any, Any, bool, Any]:
    """Load the base state dict of a non-persistent checkpoint: ``(sd, name, release, type)``.

    ``"global"``: the iteration directory under ``non_persistent_global_dir``, as a global
    checkpoint; ``"local"``: through the context's nvrx manager (the ``rank0`` metadata pass
    returns an empty dict without I/O). Collective.
    """
    kind = ckpt_cfg.non_persistent_ckpt_type
    if kind == "global":
        logger.info("loading non-persistent checkpoint of iteration %d", non_persistent_iteration)
        return _load_global_dist_base_checkpoint(
            non_persistent_global_dir,
            ckpt_cfg,
            rank0,
            sharded_state_dict,
            non_persistent_iteration,
            False,
            checkpointing_context=checkpointing_context,
        )
    if kind == "local":
        return load_local_base(
            ckpt_cfg, rank0, sharded_state_dict, non_persistent_iteration, checkpointing_context
        )
    raise ValueError(f"non_persistent_ckpt_type={kind!r} is not supported; use 'global' or 'local'")


def _weights_candidates(checkpoint_path: Path) -> list[LoadCandidate]:
    cfg = CheckpointConfig(load=str(checkpoint_path), exit_on_missing_checkpoint=True)
    candidates = load_flow.resolve(checkpoint_path, cfg, None)
    if not candidates:
        load_flow.nothing_to_load(cfg, checkpoint_path)
    return candidates


def _read_weights(directory: Path, model: list[Any], strictness: str) -> dict[str, Any]:
    common = load_common(directory)
    metadata = common.get("content_metadata")
    template = _generate_model_state_dict(model, {"metadata": metadata} if metadata else None)
    loaded = load_checkpoint_dir(template, directory, strict=strictness)
    return {
        key: drop_extra_state(value) if _is_model_section(key) else value
        for key, value in loaded.items()
    }


def _load_model_weights_from_checkpoint(
    checkpoint_path: str,
    model: list[Any],
    fully_parallel_load: bool = False,
    return_state_dict: bool = False,
    dist_ckpt_strictness: StrictHandling = "assume_ok_unexpected",
    strict: bool = True,
) -> dict[str, Any] | None:
    """Load only model weights (no optimizer, RNG or train state), e.g. for inference.

    ``checkpoint_path`` is an iteration directory or a checkpoint root (its tracker target, with
    fallback past corrupt ones). With ``return_state_dict`` the loaded state dict is returned and
    the model is left untouched. Works for Cairn, Megatron-Bridge and Megatron-LM ``torch_dist``
    checkpoints. ``fully_parallel_load`` is accepted for compatibility. Collective.
    """
    model_list = as_model_list(model)
    candidates = _weights_candidates(Path(checkpoint_path))
    candidate, state_dict = _first_readable(
        candidates, lambda path: _read_weights(path, model_list, dist_ckpt_strictness)
    )
    logger.info("rank %d: read model weights of %s", dist.get_rank(), candidate.path)
    if return_state_dict:
        return state_dict
    load_model_sections(model_list, state_dict, strict)
    dist.barrier()
    return None
